"""Request schemas of POST /api/v1/vc: the JSON body (the peer's VCRequest), the multipart form
fields and the query string. No Flask here."""
from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from chatterbox_server.api.extended.fields import EXPORT_FORMATS, RESPONSE_MODES, reference_voice_name
from chatterbox_server.synthesis.requests import in_range, one_of, seed_field

# JSON requests use the peer's chunk_sec/overlap_sec (multipart uploads keep this server's windows)
PEER_CHUNK_SECONDS, PEER_OVERLAP_SECONDS = 60, 0.1


class VcQuerySchema(Schema):
    """The query string of POST /api/v1/vc; other parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    response_mode = fields.String(load_default="stream",
                                  validate=one_of(RESPONSE_MODES))


class VcFormSchema(Schema):
    """The form fields of POST /api/v1/vc (the files are `input_audio` and optionally `target_voice_source`)."""

    class Meta:
        unknown = RAISE

    target_voice_source = fields.String(load_default=None, allow_none=True)
    export_formats = fields.Raw(load_default="wav")
    seed = seed_field()

    @validates("target_voice_source")
    def _check_target(self, value: str | None, data_key: str) -> None:
        if value:
            reference_voice_name(value)

    @post_load
    def _formats(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """export_formats as a repeated field, or one field "wav,mp3" (curl -F friendly)."""
        raw = data["export_formats"]
        items = raw if isinstance(raw, list) else [raw]
        formats = [part.strip().lower() for item in items for part in str(item).split(",") if part.strip()]
        bad = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
        if bad or not formats:
            raise ValidationError({"export_formats": [f"Must be one of: {', '.join(EXPORT_FORMATS)}."]})
        target = data["target_voice_source"]
        return {**data, "export_formats": tuple(dict.fromkeys(formats)),
                "target_voice_source": reference_voice_name(target) if target else None}


class VcJsonSchema(Schema):
    """The JSON body of POST /api/v1/vc (the peer's VCRequest)."""

    class Meta:
        unknown = RAISE

    input_audio_source = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    target_voice_source = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    chunk_sec = fields.Integer(load_default=PEER_CHUNK_SECONDS, validate=in_range(1, 300))
    overlap_sec = fields.Float(load_default=PEER_OVERLAP_SECONDS, validate=in_range(0.0, 5.0))
    disable_watermark = fields.Boolean(load_default=True)
    export_formats = fields.List(fields.String(validate=one_of(EXPORT_FORMATS)), load_default=lambda: ["wav", "mp3"],
                                 validate=validate.Length(min=1, error="Name at least one format."))
    seed = seed_field()

    @pre_load
    def _lower_formats(self, data: Any, **_: Any) -> Any:
        formats = data.get("export_formats") if isinstance(data, dict) else None
        if isinstance(formats, list):
            data = {**data, "export_formats": [f.lower() if isinstance(f, str) else f for f in formats]}
        return data

    @validates_schema
    def _overlap(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("overlap_sec", 0) >= data.get("chunk_sec", 1):
            raise ValidationError("Must be shorter than chunk_sec.", "overlap_sec")


class VcUploadSchema(VcFormSchema):
    """The form fields of a multipart POST /api/v1/vc: VcFormSchema plus the peer's form fields."""

    chunk_sec = fields.Integer(load_default=None, validate=in_range(1, 300))
    overlap_sec = fields.Float(load_default=None, validate=in_range(0.0, 5.0))
    disable_watermark = fields.Boolean(load_default=None)
