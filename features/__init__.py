"""Per-message features: turn one message at a time into numbers and facts.

Text normalisation, jieba tokens with a domain dictionary, personal-data
detection and masking, entities, visitor and consultant signals, visit-trace
features, and :class:`features.state.ConversationState`, which folds messages in
one at a time. The same code runs in training and in serving.
"""
