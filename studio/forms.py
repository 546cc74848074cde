from django import forms

from .models import Page

MAX_PROMPT_CHARS = 4000


class PromptForm(forms.ModelForm):
    class Meta:
        model = Page
        fields = ["prompt"]
        widgets = {"prompt": forms.Textarea(attrs={"rows": 5, "maxlength": MAX_PROMPT_CHARS})}
        labels = {"prompt": "What to draw"}

    def clean_prompt(self) -> str:
        prompt = self.cleaned_data["prompt"].strip()
        if len(prompt) > MAX_PROMPT_CHARS:
            raise forms.ValidationError(
                f"A prompt can be at most {MAX_PROMPT_CHARS} characters "
                f"(this one has {len(prompt)})."
            )
        return prompt
