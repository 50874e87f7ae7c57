"""Label Studio labeling interface for sentiloop.

The choice values must equal the model's label strings so that annotations pulled back
can be used as training labels without any mapping.
"""

from __future__ import annotations

from domain import LABELS

__all__ = ["FROM_NAME", "LABEL_CHOICES", "LABEL_CONFIG", "TO_NAME"]

LABEL_CHOICES: tuple[str, str, str] = LABELS
"""Sentiment labels, identical to the model's label strings (order = model class index)."""

FROM_NAME = "sentiment"
"""Name of the Choices control; results come back with this ``from_name``."""

TO_NAME = "text"
"""Name of the Text object the choices refer to."""

_CHOICES = "\n".join(
    f'    <Choice value="{label.capitalize()}" alias="{label}" hotkey="{i}"/>'
    for i, label in enumerate(LABEL_CHOICES, start=1)
)
LABEL_CONFIG: str = f"""<View>
  <Header value="Chat $chat_id"/>
  <Text name="meta" value="$meta"/>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single-radio" showInline="true" required="true">
{_CHOICES}
  </Choices>
</View>
"""
"""Label Studio XML: chat text with its metadata line and a single-choice sentiment."""
