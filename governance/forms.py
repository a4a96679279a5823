"""Forms of the governance pages: they parse and check input, services write."""

import datetime as dt
from typing import Any, cast

from django import forms
from django.utils import timezone

from commerce.models import Customer, Product
from governance.models import Decision, OverrideKind, ReasonCode
from governance.services import OverrideSpec

VALUED_KINDS = {
    OverrideKind.CAP: "the exposure share, above 0 and at most 1",
    OverrideKind.DEMOTE: "the score multiplier, from 0 to below 1",
    OverrideKind.BOOST: "the score multiplier, above 1",
    OverrideKind.PIN: "the 1-based position",
}
"""Override kinds that need a value, and what the value means."""

DATETIME_INPUT = forms.DateTimeInput(
    attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
)


def choice_field(form: forms.Form, name: str) -> forms.ChoiceField:
    """A form's choice field, typed as such, to set its choices."""
    return cast(forms.ChoiceField, form.fields[name])


def _with_blank(choices: Any, blank: str) -> list[tuple[str, str]]:
    return [("", blank), *choices]


class PageForm(forms.Form):
    """A form whose labels stand above their fields, without a colon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class VersionForm(PageForm):
    """The item version the page showed; a change since makes the action fail."""

    version = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class EscalateForm(VersionForm):
    note = forms.CharField(
        label="Why escalate",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What an administrator needs to know to decide.",
    )


class OverrideFieldsForm(PageForm):
    """What an override does, to whom, and until when."""

    override_kind = forms.ChoiceField(
        label="Override kind",
        required=False,
        choices=_with_blank(OverrideKind.choices, "No override"),
    )
    override_value = forms.FloatField(
        label="Value",
        required=False,
        help_text="Cap: exposure share (0-1]. Demote: multiplier [0-1). "
        "Boost: multiplier above 1. Pin: position from 1.",
    )
    product = forms.CharField(
        label="Product SKU",
        required=False,
        max_length=128,
        help_text="Only when the item's target is not the product itself.",
    )
    customer = forms.CharField(
        label="Customer id",
        required=False,
        max_length=128,
        help_text="For a training exclusion, when the item's target is not "
        "the customer.",
    )
    group_attribute = forms.CharField(
        label="Only for customers whose",
        required=False,
        max_length=64,
        help_text="A group attribute such as country; empty means everyone.",
    )
    group_value = forms.CharField(label="equals", required=False, max_length=128)
    expires_at = forms.DateTimeField(
        label="Expires at",
        required=False,
        widget=DATETIME_INPUT,
        help_text="Empty: in force until revoked.",
    )
    statement = forms.CharField(
        label="Statement for merchants",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The reasons in plain language; merchants read this.",
    )

    def clean_product(self) -> int | None:
        reference = self.cleaned_data["product"].strip()
        return product_id_of(reference) if reference else None

    def clean_customer(self) -> int | None:
        external_id = self.cleaned_data["customer"].strip()
        if not external_id:
            return None
        customer = Customer.objects.filter(external_id=external_id).first()
        if customer is None:
            raise forms.ValidationError(f"No customer has id {external_id!r}.")
        return customer.pk

    def clean_expires_at(self) -> dt.datetime | None:
        expires_at: dt.datetime | None = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("override_kind")
        if kind in VALUED_KINDS and cleaned.get("override_value") is None:
            self.add_error(
                "override_value", f"A {kind} override needs {VALUED_KINDS[kind]}."
            )
        attribute = cleaned.get("group_attribute", "").strip()
        value = cleaned.get("group_value", "").strip()
        if bool(attribute) != bool(value):
            self.add_error(
                "group_value" if attribute else "group_attribute",
                "Name both the group attribute and its value, or neither.",
            )
        return cleaned

    def override_spec(self) -> OverrideSpec:
        data = self.cleaned_data
        return OverrideSpec(
            kind=OverrideKind(data["override_kind"]),
            value=data.get("override_value"),
            group_attribute=data.get("group_attribute", "").strip(),
            group_value=data.get("group_value", "").strip(),
            expires_at=data.get("expires_at"),
            statement=data.get("statement", "").strip(),
            product_id=data.get("product"),
            customer_id=data.get("customer"),
        )


def product_id_of(reference: str) -> int:
    """The product a SKU names, or a validation error."""
    product_id = (
        Product.objects.filter(external_id=reference.strip())
        .values_list("pk", flat=True)
        .first()
    )
    if product_id is None:
        raise forms.ValidationError(f"No product has SKU {reference!r}.")
    return product_id


class DecisionForm(VersionForm, OverrideFieldsForm):
    """A reviewer's decision on a claimed item."""

    decision = forms.ChoiceField(choices=Decision.choices, widget=forms.RadioSelect)
    reason_code = forms.ChoiceField(
        label="Reason",
        choices=_with_blank(ReasonCode.choices, "Choose a reason"),
    )
    note = forms.CharField(
        label="Note",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For the record and other reviewers; merchants never see it.",
    )

    field_order = ["decision", "reason_code", "note", "override_kind"]

    def decision_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("decision", "reason_code", "note")]

    def override_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in OverrideFieldsForm.base_fields]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        decision, kind = cleaned.get("decision"), cleaned.get("override_kind")
        if decision == Decision.OVERRIDE and not kind:
            self.add_error("override_kind", "Choose the override to put in force.")
        if decision == Decision.OVERRIDE and not cleaned.get("statement", "").strip():
            self.add_error(
                "statement",
                "An override needs a statement of its reasons in plain language, "
                "which merchants read.",
            )
        elif decision and decision != Decision.OVERRIDE and kind:
            self.add_error(
                "override_kind",
                "Only an override decision puts an override in force; "
                "choose Override or no override.",
            )
        return cleaned

    def decision_spec(self) -> OverrideSpec | None:
        if self.cleaned_data["decision"] != Decision.OVERRIDE:
            return None
        return self.override_spec()


class OverrideForm(OverrideFieldsForm):
    """An override an administrator puts in force without a review item."""

    reason_code = forms.ChoiceField(
        label="Reason",
        choices=_with_blank(ReasonCode.choices, "Choose a reason"),
    )
    starts_at = forms.DateTimeField(
        label="Starts at",
        required=False,
        widget=DATETIME_INPUT,
        help_text="Empty: now.",
    )

    field_order = [
        "override_kind",
        "product",
        "customer",
        "override_value",
        "group_attribute",
        "group_value",
        "starts_at",
        "expires_at",
        "reason_code",
        "statement",
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["override_kind"].required = True
        choice_field(self, "override_kind").choices = _with_blank(
            OverrideKind.choices, "Choose a kind"
        )
        self.fields["statement"].required = True
        self.fields["product"].help_text = "For suppress, cap, demote, boost and pin."
        self.fields["customer"].help_text = "For a training exclusion."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("override_kind")
        if kind == OverrideKind.EXCLUDE_TRAINING:
            if cleaned.get("customer") is None and "customer" not in self.errors:
                self.add_error("customer", "A training exclusion names a customer.")
        elif kind and cleaned.get("product") is None and "product" not in self.errors:
            self.add_error("product", f"A {kind} override names a product.")
        return cleaned

    def service_arguments(self) -> dict[str, Any]:
        spec = self.override_spec()
        return {
            "kind": spec.kind,
            "reason_code": ReasonCode(self.cleaned_data["reason_code"]),
            "statement": spec.statement,
            "product_id": spec.product_id,
            "customer_id": spec.customer_id,
            "value": spec.value,
            "group_attribute": spec.group_attribute,
            "group_value": spec.group_value,
            "starts_at": self.cleaned_data.get("starts_at"),
            "expires_at": spec.expires_at,
        }


class RevokeOverrideForm(PageForm):
    reason = forms.CharField(label="Reason for revoking", max_length=1000)
