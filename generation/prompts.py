"""What is actually sent to the image service for a page."""

from studio.models import Page

MAX_PROMPT_CHARS = 4000


def compose_prompt(page: Page) -> str:
    """Return the page's prompt with the project's style guide, so a book looks like one book.

    The page's own prompt (or its text, when no prompt is set) comes first, then the style
    guide under a fixed heading; the whole is trimmed to what every supported model accepts.
    """
    prompt = page.illustration_prompt
    style = page.project.style_guide.strip()
    if style:
        prompt = f"{prompt}\n\nStyle guide: {style}"
    return prompt[:MAX_PROMPT_CHARS]
