"""Plain Stable Diffusion: nothing is learned, the action is written in words (ADI's first baseline)."""

from __future__ import annotations

from methods.base import ActionMethod


class PlainPrompt(ActionMethod):
    def __init__(self, max_train_steps: int = 0):
        """`max_train_steps` is accepted so that every method shares the key; nothing trains here."""

    def action_text(self, task) -> str:
        return task.action.description
