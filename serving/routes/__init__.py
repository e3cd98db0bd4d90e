"""The sidecar's endpoint groups, one ``APIRouter`` each."""

from __future__ import annotations

from serving.routes import chat, decisions, feedback, models, ops

ROUTERS = (chat.router, decisions.router, feedback.router, models.router, ops.router)

__all__ = ["ROUTERS"]
