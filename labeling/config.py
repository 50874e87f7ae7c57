"""Label Studio labeling interface for sentiloop.

The choice values must equal the model's label strings so that annotations pulled back
can be used as training labels without any mapping.
"""

from __future__ import annotations

__all__ = ["FROM_NAME", "LABEL_CHOICES", "LABEL_CONFIG", "TO_NAME"]

LABEL_CHOICES: tuple[str, str, str] = ("negative", "neutral", "positive")
"""Sentiment labels, identical to the model's label strings (order = model class index)."""

FROM_NAME = "sentiment"
"""Name of the Choices control; results come back with this ``from_name``."""

TO_NAME = "text"
"""Name of the Text object the choices refer to."""

LABEL_CONFIG: str = """<View>
  <Header value="Chat $chat_id"/>
  <Text name="meta" value="$meta"/>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single-radio" showInline="true" required="true">
    <Choice value="Negative" alias="negative" hotkey="1"/>
    <Choice value="Neutral" alias="neutral" hotkey="2"/>
    <Choice value="Positive" alias="positive" hotkey="3"/>
  </Choices>
</View>
"""
"""Label Studio XML: chat text with its metadata line and a single-choice sentiment."""
