from django import forms
from django.contrib.auth.base_user import BaseUserManager
from django.db import transaction
from django.urls import reverse

from generation import selectors
from generation.story import MAX_STORY_PAGES

from . import geometry
from .characters import (
    MAX_REFERENCE_BYTES,
    MAX_REFERENCE_SIDE,
    CharacterError,
    CheckedImage,
    check_reference_image,
)
from .manuscript import MAX_FILE_BYTES, ManuscriptError, decode_manuscript, parse_manuscript
from .models import (
    MAX_PAGE_CHARS,
    MAX_PAGES,
    MAX_PROMPT_CHARS,
    Character,
    EditorSettings,
    Export,
    Page,
    Project,
)
from .text import megabytes

MAX_STYLE_CHARS = 4000
CUSTOM_TRIM = "custom"
# What the forms say of the limits, read from where each is enforced.
MANUSCRIPT_LIMITS = f"At most {MAX_PAGES:,} pages of {MAX_PAGE_CHARS:,} characters."
PICTURE_LIMITS = (
    f"PNG, JPEG or WebP, at most {megabytes(MAX_REFERENCE_BYTES)} and {MAX_REFERENCE_SIDE} "
    "pixels a side."
)
SECTION_HELP = (
    "Optional: the chapter or scene this page belongs to, e.g. “Chapter 2”. "
    "The review page groups pages by section."
)


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["title", "style_guide"]
        widgets = {"style_guide": forms.Textarea(attrs={"rows": 4, "maxlength": MAX_STYLE_CHARS})}
        labels = {"style_guide": "Style guide and characters"}
        error_messages = {"title": {"required": "Give the project a title."}}
        help_texts = {
            "style_guide": "Art style, and the recurring characters and how they look. "
            "Added to every page's prompt so the book looks like one book."
        }

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give the project a title.")
        return title

    def clean_style_guide(self) -> str:
        style = self.cleaned_data["style_guide"].strip()
        if len(style) > MAX_STYLE_CHARS:
            raise forms.ValidationError(
                f"The style guide can be at most {MAX_STYLE_CHARS:,} characters."
            )
        return style


class ProjectSettingsForm(ProjectForm):
    """An existing project: its name and look, its image service, and its spend and speed
    limits."""

    image_service = forms.ChoiceField(
        label="Image service",
        required=False,
        help_text="Who draws this project's pictures: the services whose keys are configured.",
    )
    trim = forms.ChoiceField(
        required=False,
        label="Trim (the printed page's size)",
        help_text="The book preview, the print files and the EPUB are drawn at this size.",
    )
    paper = forms.ChoiceField(
        required=False,
        label="Paper (for the cover's spine)",
        choices=list(geometry.PAPER_LABELS.items()),
    )
    custom_trim = forms.CharField(
        required=False,
        label="Custom trim",
        help_text=f"Width x height in inches, e.g. 7x9, when the trim is “Custom size”; "
        f"each side from {geometry.SMALLEST_SIDE:g} to {geometry.LARGEST_SIDE:g} in.",
    )

    image_model = forms.ChoiceField(
        label="Model",
        required=False,
        help_text="Which of the service's models draws the pictures; models their service has "
        "shut down are not offered.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The service in force is the one shown, also for a book on the studio's default
        # (stored as "", which no option has: the browser would send the first option)
        # and for one whose service is no longer configured (kept until changed).
        self.in_force = selectors.project_service_name(self.instance)
        self.fields["image_model"].choices = selectors.model_form_choices()
        choices = selectors.image_service_choices()
        if self.in_force not in dict(choices):
            label = selectors.service_label(self.in_force)
            choices = [(self.in_force, f"{label} · not configured now"), *choices]
        self.fields["image_service"].choices = choices
        if "image_service" not in (kwargs.get("initial") or {}):
            self.initial["image_service"] = self.in_force
        self.fields["trim"].choices = [*geometry.trim_choices(), (CUSTOM_TRIM, "Custom size")]
        if self.instance.trim not in geometry.PRESETS:
            self.initial["trim"] = CUSTOM_TRIM
            self.initial["custom_trim"] = self.instance.trim

    def clean(self):
        cleaned = super().clean()
        self._clean_model(cleaned)
        # A form that leaves the print fields out (an older page, a script) keeps them.
        for name in ("trim", "paper"):
            if not cleaned.get(name) and name not in self.errors:
                cleaned[name] = getattr(self.instance, name)
        if cleaned.get("trim") == CUSTOM_TRIM:
            try:
                cleaned["trim"] = geometry.parse_trim(cleaned.get("custom_trim", "")).key
            except ValueError as error:
                self.add_error("custom_trim", f"{str(error)[0].upper()}{str(error)[1:]}.")
        return cleaned

    def clean_cover_page(self):
        number = self.cleaned_data["cover_page"]
        if number is not None and not self.instance.pages.filter(number=number).exists():
            raise forms.ValidationError(f"This book has no page {number}.")
        return number

    def clean_image_service(self) -> str:
        """Return the service to store: the editor's new choice, or, when they left it as
        shown (or out of the form), what the project had, so a book on the studio's default
        stays on the default."""
        chosen = self.cleaned_data["image_service"]
        if not chosen or chosen == self.in_force:
            return self.instance.image_service
        return chosen

    def _clean_model(self, cleaned: dict) -> None:
        """Check the model against the chosen service: it must be one of that service's
        models, not shut down, and take the studio's picture size (STUDIO_IMAGE_SIZE), or
        the form says which rule it breaks."""
        service = cleaned.get("image_service") or self.in_force
        model = cleaned.get("image_model") or ""
        if service != self.in_force and model == self.instance.image_model:
            model = ""  # a new service starts on its own configured model
        cleaned["image_model"] = model
        if model:
            problem = selectors.model_problem(service, model)
            if problem:
                self.add_error("image_model", problem)

    class Meta(ProjectForm.Meta):
        # The form's fields in the order it shows them: custom_trim, a field of the form's
        # own (the trim when it is "Custom size"), may be listed among the model's.
        fields = [
            "title",
            "style_guide",
            "image_service",
            "image_model",
            "budget",
            "max_concurrent",
            "requests_per_minute",
            "author",
            "trim",
            "custom_trim",
            "paper",
            "cover_page",
        ]
        labels = {
            **ProjectForm.Meta.labels,
            "author": "Author (on the title page and the cover)",
            "cover_page": "Cover picture from page",
            "budget": "Budget (USD)",
            "max_concurrent": "Calls at once",
            "requests_per_minute": "Calls per minute",
        }

    def clean_budget(self):
        budget = self.cleaned_data["budget"]
        if budget is not None and budget < 0:
            raise forms.ValidationError("A budget cannot be negative.")
        return budget


class ManuscriptForm(ProjectForm):
    manuscript = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12}),
        help_text="Paste the text; a line holding only --- starts a new page, and a line "
        "“## Chapter 1” at the top of a page starts a section.",
    )
    upload = forms.FileField(
        required=False,
        label="…or upload a .txt or .md file",
        help_text=f"UTF-8 or UTF-16, at most {megabytes(MAX_FILE_BYTES)}.",
    )

    class Meta(ProjectForm.Meta):
        pass

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload is None:
            return ""
        if not upload.name.lower().endswith((".txt", ".md")):
            raise forms.ValidationError("Upload a .txt or .md file.")
        try:
            # Read one byte past the limit: enough to refuse it without reading it all.
            return decode_manuscript(upload.read(MAX_FILE_BYTES + 1), size=upload.size)
        except ManuscriptError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        cleaned = super().clean()
        text = cleaned.get("upload") or cleaned.get("manuscript") or ""
        cleaned["pages"] = []
        if text.strip():
            try:
                cleaned["pages"] = parse_manuscript(text)
            except ManuscriptError as exc:
                field = "upload" if cleaned.get("upload") else "manuscript"
                self.add_error(field, str(exc))
            else:
                cleaned["manuscript"] = text  # the preview keeps an upload's text
        return cleaned


class PremiseForm(ProjectForm):
    premise = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "maxlength": 2000}),
        max_length=2000,
        help_text="What happens, to whom.",
    )
    audience = forms.CharField(required=False, max_length=200, help_text="For example: ages 4–6.")
    page_count = forms.IntegerField(
        label="Pages", min_value=1, max_value=MAX_STORY_PAGES, initial=12
    )

    class Meta(ProjectForm.Meta):
        pass


class PageCharactersField(forms.ModelMultipleChoiceField):
    """Who appears on the page: the project's characters, settings and props."""

    widget = forms.CheckboxSelectMultiple

    def label_from_instance(self, character) -> str:
        # Its picture goes whether ticked or not: the tick is still the page's own tag.
        return f"{character.name} (on every page)" if character.every_page else character.name


def _page_characters(form, page: Page) -> None:
    field = PageCharactersField(
        queryset=page.project.characters.exclude(kind=Character.Kind.STYLE),
        required=False,
        label="Who appears on this page",
        help_text="Their reference pictures are sent with the page.",
    )
    form.fields["characters"] = field
    # Only a form that showed the checkboxes changes who appears on the page: a post
    # without them (an older tab, a script) leaves the tags alone.
    form.fields["characters_shown"] = forms.BooleanField(
        required=False, initial=True, widget=forms.HiddenInput
    )
    if page.pk:
        form.initial.setdefault("characters", list(page.characters.values_list("pk", flat=True)))


class PageForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _page_characters(self, self.instance)

    class Meta:
        model = Page
        fields = ["section", "label", "text", "prompt"]
        widgets = {
            "section": forms.TextInput(attrs={"list": "project-sections"}),
            "text": forms.Textarea(attrs={"rows": 5, "maxlength": 5000}),
            "prompt": forms.Textarea(attrs={"rows": 4, "maxlength": MAX_PROMPT_CHARS}),
        }
        labels = {"prompt": "What to draw"}
        error_messages = {"text": {"required": "A page needs some text."}}
        help_texts = {
            "label": "Optional, e.g. “Beat 1.1” or “Scene 3 · Shot 2”.",
            "section": SECTION_HELP,
        }

    def clean_section(self) -> str:
        return self.cleaned_data["section"].strip()

    def clean_text(self) -> str:
        text = self.cleaned_data["text"].strip()
        if not text:
            raise forms.ValidationError("A page needs some text.")
        if len(text) > MAX_PAGE_CHARS:
            raise forms.ValidationError(
                f"A page can have at most {MAX_PAGE_CHARS:,} characters (this one has "
                f"{len(text):,})."
            )
        return text

    def clean_prompt(self) -> str:
        return _clean_prompt(self.cleaned_data["prompt"])


class PromptForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _page_characters(self, self.instance)

    class Meta:
        model = Page
        fields = ["prompt"]
        widgets = {"prompt": forms.Textarea(attrs={"rows": 5, "maxlength": MAX_PROMPT_CHARS})}
        labels = {"prompt": "What to draw"}

    def clean_prompt(self) -> str:
        return _clean_prompt(self.cleaned_data["prompt"])


class NewPageForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": 5000}), max_length=5000
    )
    label = forms.CharField(required=False, max_length=80)
    section = forms.CharField(
        required=False,
        max_length=80,
        help_text=SECTION_HELP,
        widget=forms.TextInput(attrs={"list": "project-sections"}),
    )
    after = forms.IntegerField(required=False, widget=forms.HiddenInput)


def _clean_prompt(prompt: str) -> str:
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise forms.ValidationError(
            f"A prompt can be at most {MAX_PROMPT_CHARS} characters (this one has {len(prompt)})."
        )
    return prompt


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=Export.Format.choices, initial=Export.Format.PDF)
    page_size = forms.ChoiceField(
        choices=Export.PageSize.choices,
        initial=Export.PageSize.A4,
        help_text="For the PDF to read on screen.",
    )
    trim = forms.ChoiceField(required=False, help_text="For the print files and the EPUB.")
    paper = forms.ChoiceField(
        required=False,
        choices=list(geometry.PAPER_LABELS.items()),
        help_text="The cover's spine is as thick as the pages on this paper.",
    )
    resample = forms.BooleanField(
        required=False,
        label="Resample pictures under 300 DPI to 300 DPI here (smoother, adds no detail)",
        help_text="For the print files; the export's report names every page resampled.",
    )

    def __init__(self, *args, project, trim: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        # A custom WxH asked for (a link's ?trim=, a past export's Retry) is a choice too.
        asked = [value for value in (trim, self.data.get("trim", "")) if custom_trim(value)]
        self.fields["trim"].choices = geometry.trim_choices(project.trim, *asked)
        self.fields["trim"].initial = trim or project.trim
        self.fields["paper"].initial = project.paper
        # Choosing a trim refreshes the list of pages under 300 DPI at that trim.
        self.fields["trim"].widget.attrs.update(
            {
                "hx-get": reverse("project-export", args=[project.pk]),
                "hx-trigger": "change",
                "hx-target": "#resolution",
                "hx-swap": "outerHTML",
            }
        )


def custom_trim(value: str) -> bool:
    """Return whether `value` is a trim the studio can print (a preset or WxH)."""
    try:
        geometry.parse_trim(value)
    except ValueError:
        return False
    return True


class CoverDrawForm(forms.ModelForm):
    """The cover prompt, saved as the cover's own picture is asked for."""

    class Meta:
        model = Project
        fields = ["cover_prompt"]
        widgets = {"cover_prompt": forms.Textarea(attrs={"rows": 3, "maxlength": 2000})}
        labels = {"cover_prompt": "What the cover's picture shows"}

    def clean_cover_prompt(self) -> str:
        return self.cleaned_data["cover_prompt"].strip()


class CharacterDetailsForm(forms.ModelForm):
    """A character's name, kind, description and aliases."""

    class Meta:
        model = Character
        fields = ["name", "kind", "description", "aliases", "every_page"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3, "maxlength": 1000})}
        labels = {"aliases": "Other names"}
        help_texts = {
            "description": "What must not change: species, colours, clothes.",
            "aliases": "Comma-separated, e.g. “Mrs. Rabbit, his mother”: pages naming any "
            "of them are tagged.",
        }
        error_messages = {"name": {"required": "Give the character a name."}}

    def clean_description(self) -> str:
        description = self.cleaned_data["description"].strip()
        if len(description) > 1000:
            raise forms.ValidationError("A description can be at most 1,000 characters.")
        return description


def checked_picture(upload) -> CheckedImage:
    """Return an uploaded reference picture, checked (see check_reference_image); a form
    error says what is wrong. It reads one byte past the limit: enough to refuse a picture
    too large without reading it all."""
    try:
        return check_reference_image(upload.read(MAX_REFERENCE_BYTES + 1), size=upload.size)
    except CharacterError as error:
        raise forms.ValidationError(str(error)) from None


class CharacterForm(CharacterDetailsForm):
    """A new character, setting, prop or style reference, with an optional picture."""

    image = forms.FileField(
        required=False,
        label="Reference picture",
        help_text=f"{PICTURE_LIMITS} Or leave it empty and let the studio draw a character sheet.",
    )

    class Meta(CharacterDetailsForm.Meta):
        pass

    def clean_image(self):
        upload = self.cleaned_data.get("image")
        return checked_picture(upload) if upload else None


class ReferenceUploadForm(forms.Form):
    image = forms.FileField(
        label="Upload a new version",
        help_text=PICTURE_LIMITS,
    )

    def clean_image(self):
        return checked_picture(self.cleaned_data["image"])


class EditorSettingsForm(forms.ModelForm):
    """The editor's settings, and their email address (kept on their account)."""

    email = forms.EmailField(
        required=False,
        max_length=254,
        label="Email address",
        help_text="Where the studio writes to you. Leave it empty and no email is sent.",
    )

    class Meta:
        model = EditorSettings
        fields = ["email", "email_on_run_end"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["email"].initial = self.instance.user.email
        self.fields["email_on_run_end"].label_suffix = ""  # a box's label is no heading

    def clean_email(self) -> str:
        # The part after the @ is a domain, whose case does not matter; the rest may.
        return BaseUserManager.normalize_email(self.cleaned_data["email"])

    def save(self, commit: bool = True) -> EditorSettings:
        user = self.instance.user
        user.email = self.cleaned_data["email"]
        with transaction.atomic():  # both or neither
            user.save(update_fields=["email"])
            return super().save(commit=commit)
