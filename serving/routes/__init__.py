"""The API's endpoints, one router per resource; ``create_app`` includes them in :data:`ROUTERS` order.

Each endpoint takes what it needs from ``serving/deps.py`` (the caller, a role requirement, the
service, the state) and documents its error answers with ``serving/errors.errors``.
"""

from fastapi import APIRouter

from yuyue.serving.routes import (
    admin,
    appointments,
    chats,
    console,
    export,
    followups,
    health,
    knowledge,
    ops,
    patients,
    replies,
    stats,
    suggestions,
    tasks,
)

ROUTERS: tuple[APIRouter, ...] = (
    chats.router,
    suggestions.router,
    followups.router,
    appointments.router,
    tasks.router,
    patients.router,
    stats.router,
    export.router,
    replies.router,
    knowledge.router,
    admin.router,
    health.router,
    ops.router,
    console.router,
)
