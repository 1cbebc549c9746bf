"""The conversation simulator: synthetic consultation chats with known truth.

Visitors with latent traits (intent, price sensitivity, urgency, locality,
chattiness) meet consultants of different skill; what happens in the chat and
the visit trace depends on both, and booking/arrival outcomes are drawn from
probabilities recorded under ``truth`` for evaluation. Phrasing and the simulated
world are data in ``phrases/*.yaml``.

``truth.entities`` lists every contact detail, ID number and surname that a
*visitor* typed; consultants addressing the visitor by name are not listed.
"""

from yuyue.data.simulator.dialogue import ConversationSimulator, conversation_seed
from yuyue.data.simulator.generate import generate_file, iter_records

__all__ = ["ConversationSimulator", "conversation_seed", "generate_file", "iter_records"]
