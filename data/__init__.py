"""Conversations: what a conversation record is and how records get in and out.

The contract (pydantic models and the JSON schema copied from the team's
shared contract), streaming JSONL reading and writing, validation, importers
from chat-tool exports, and the simulator that generates synthetic chats.
"""
