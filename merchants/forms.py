"""Forms of the merchant portal: the window of days and the why-not question."""

import datetime as dt
from collections.abc import Iterable
from functools import cached_property
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone

from commerce.models import Customer
from merchants.selectors import (
    DEFAULT_DAYS,
    EARLIEST_DAY,
    MAX_DAYS,
    Window,
    default_last_day,
    latest_day,
)

ALL_CUSTOMERS = ""


class PageForm(forms.Form):
    """A form whose labels stand above their fields, without a colon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class WindowForm(PageForm):
    """Whole days up to ``until``; without it, up to the merchants' latest day
    of activity when that is before today (see ``default_last_day``)."""

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
        validators=[
            MinValueValidator(EARLIEST_DAY),
            MaxValueValidator(latest_day),
        ],
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The last day counted; if empty, the latest day with activity "
        "on your products, or today.",
    )

    def __init__(
        self, *args: Any, merchant_ids: Iterable[int] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.merchant_ids = list(merchant_ids)

    @cached_property
    def default_last_day(self) -> dt.date:
        return default_last_day(self.merchant_ids)

    def asked_until(self) -> dt.date | None:
        """The last day asked for; None when none was, or the input is invalid."""
        if not self.is_bound or not self.is_valid():
            return None
        until: dt.date | None = self.cleaned_data.get("until")
        return until

    def window(self) -> Window:
        """The window asked for, or the default one when the input is invalid."""
        if not self.is_bound or not self.is_valid():
            return Window.ending(self.default_last_day)
        return Window.ending(
            self.asked_until() or self.default_last_day,
            self.cleaned_data.get("days") or DEFAULT_DAYS,
        )

    def caption(self) -> str:
        """Which days the figures cover, and why the window ends where it does."""
        window = self.window()
        days = f"{window.first_day:%Y-%m-%d} to {window.last_day:%Y-%m-%d}"
        if self.asked_until() is not None:
            return f"Figures for {days}."
        if window.last_day < timezone.localdate():
            return (
                f"Figures for {days}, up to the latest day with slates or customer "
                "events for your products; nothing has happened on them since."
            )
        return f"Figures for {days}, up to today."


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
