"""The story phase's rules: how long a story may be and what a text service is asked for.

Vendor-neutral: the engine's story kind records this prompt, every text provider sends it.
"""

from .providers.base import StoryRequest

MAX_STORY_PAGES = 300


def story_prompt(request: StoryRequest) -> str:
    """Return the user message that asks for exactly request.pages pages."""
    audience = f" for {request.audience}" if request.audience else ""
    style = f"\nKeep to this style guide: {request.style_guide}" if request.style_guide else ""
    return f"Write exactly {request.pages} pages{audience}.\nPremise: {request.premise}{style}"
