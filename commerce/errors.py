"""Domain errors of the commerce app, each with a stable code."""


class CommerceError(Exception):
    """Base class; ``code`` is stable and safe to show to API clients."""

    code = "commerce_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImportFormatError(CommerceError):
    """The file cannot be imported as a whole: wrong format, columns or mapping."""

    code = "import_format_invalid"


class InvalidEventsError(CommerceError):
    """Some events of a batch are invalid: a bad field, an unknown product,
    customer or slate, or a slate they do not match; the batch is refused whole.

    ``details`` lists each problem as ``{"index", "field", "code", "message"}``.
    """

    code = "invalid_events"

    def __init__(self, message: str, details: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.details = details


class InvalidProductsError(CommerceError):
    """Some products of a catalogue sync cannot be stored: a SKU given twice in
    the batch, or a new product without a title; the batch is refused whole.

    ``details`` lists each problem as ``{"index", "field", "code", "message"}``.
    """

    code = "invalid_products"

    def __init__(self, message: str, details: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.details = details


class IdempotencyKeyReusedError(CommerceError):
    """Some events of a batch reuse the client event id of a stored event that
    says something else; the batch is refused whole.

    ``details`` lists each such event as ``{"index", "field", "code", "message"}``.
    """

    code = "idempotency_key_reused"

    def __init__(self, message: str, details: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.details = details


class SkuOwnedByOtherMerchantError(CommerceError):
    """Some products of a catalogue sync are given to another merchant than the
    one that sells their SKU; the batch is refused whole.

    ``details`` lists each such product as ``{"index", "field", "code", "message"}``.
    """

    code = "sku_owned_by_other_merchant"

    def __init__(self, message: str, details: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.details = details


class ApiClientError(CommerceError):
    """An API client cannot be created or changed as asked."""

    code = "api_client_invalid"
