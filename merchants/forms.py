"""Forms of the merchant portal: the window of days and the why-not question."""

import datetime as dt
from typing import Any, cast

from django import forms
from django.conf import settings
from django.utils import timezone

from commerce.models import Customer
from merchants.selectors import DEFAULT_DAYS, MAX_DAYS, Window

ALL_CUSTOMERS = ""


class PageForm(forms.Form):
    """A form whose labels stand above their fields, without a colon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class WindowForm(PageForm):
    days = forms.IntegerField(
        label="Days",
        min_value=1,
        max_value=MAX_DAYS,
        initial=DEFAULT_DAYS,
        required=False,
        widget=forms.NumberInput(attrs={"size": 4}),
    )
    until = forms.DateField(
        label="Up to",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The last day counted; today if empty.",
    )

    def window(self) -> Window:
        """The window asked for, or the default one when the input is invalid."""
        if not self.is_bound or not self.is_valid():
            return Window.ending()
        until: dt.date | None = self.cleaned_data.get("until")
        return Window.ending(
            until or timezone.localdate(), self.cleaned_data.get("days") or DEFAULT_DAYS
        )


def country_choices() -> list[tuple[str, str]]:
    countries = (
        Customer.objects.exclude(country="")
        .order_by("country")
        .values_list("country", flat=True)
        .distinct()
    )
    return [(ALL_CUSTOMERS, "All customers"), *((c, c) for c in countries)]


class WhyNotForm(PageForm):
    country = forms.ChoiceField(label="Customers in", required=False)
    k = forms.IntegerField(
        label="Slate size",
        min_value=1,
        max_value=settings.SERVING_MAX_K,
        initial=10,
        required=False,
        help_text="How many products the shop shows at once.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["country"]).choices = country_choices()

    def groups(self) -> dict[str, str]:
        country = self.cleaned_data.get("country")
        return {"country": country} if country else {}

    def slate_size(self) -> int:
        return self.cleaned_data.get("k") or 10
