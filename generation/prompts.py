"""What is actually sent to the image service for a page."""

from studio.models import Page

MAX_PROMPT_CHARS = 4000


def compose_prompt(page: Page) -> str:
    """Return the page's prompt with the project's style guide, so a book looks like one book.

    The page's own prompt (or its text, when no prompt is set) comes first, then the style
    guide under a fixed heading; the whole is trimmed to what every supported model accepts.
    """
    return compose(page.illustration_prompt, page.project.style_guide)


def compose(illustration_prompt: str, style_guide: str) -> str:
    """compose_prompt from a page's illustration_prompt and its project's style guide (for
    many pages read as values, with no Page built for each)."""
    style = style_guide.strip()
    prompt = f"{illustration_prompt}\n\nStyle guide: {style}" if style else illustration_prompt
    return prompt[:MAX_PROMPT_CHARS]
