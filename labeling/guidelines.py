"""The labelling instructions annotators see in Label Studio (before they start, and from the
labelling screen): what each sentiment means in customer service, with examples. Teams
replace them with their own file (SENTILOOP_GUIDELINES_FILE)."""

from __future__ import annotations

import html

__all__ = ["DEFAULT_GUIDELINES", "guidelines_html"]

DEFAULT_GUIDELINES = """<h3>How to label a customer's message</h3>
<p>Label how the <b>customer</b> feels about the service in this message, not the topic.
The model routes negative customers to senior agents, so a missed negative costs most.</p>
<ul>
<li><b>Negative</b>: complaint, frustration, anger, disappointment, sarcasm, a threat to
leave, or a problem reported with annoyance.
<i>"Third time my order is late. Unbelievable."</i> <i>"Great, another hour on hold."</i></li>
<li><b>Neutral</b>: a question, a request or plain information without feeling either way.
<i>"Can I change the delivery address?"</i> <i>"My order number is in the e-mail."</i></li>
<li><b>Positive</b>: thanks, praise, relief, satisfaction.
<i>"Thanks, that was quick!"</i> <i>"Love the new app."</i></li>
</ul>
<p>Mixed feelings: choose what the customer would want an agent to act on (a thank-you
followed by a complaint is negative). Politeness alone (<i>"please"</i>, <i>"thanks in
advance"</i>) does not make a request positive. If you really cannot tell, skip the task:
it is asked again later, and a skip is better than a guess.</p>
"""
"""The built-in guidelines (HTML, as Label Studio's ``expert_instruction``)."""


def guidelines_html(text: str, suffix: str = "") -> str:
    """Instructions from a file: HTML (``.html``/``.htm``) as it is, anything else as plain
    text whose blank-line-separated paragraphs become HTML paragraphs."""
    if suffix.lower() in (".html", ".htm"):
        return text
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "\n".join("<p>" + html.escape(p).replace("\n", "<br/>") + "</p>" for p in paragraphs)
