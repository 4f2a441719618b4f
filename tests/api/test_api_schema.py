"""The OpenAPI schema (zero warnings), the self-hosted docs page, and schema-driven fuzzing against a live server."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

TOKEN_CHANGING = {
    ("DELETE", "/api/v1/auth/token/"),
    ("POST", "/api/v1/me/token/"),
    ("DELETE", "/api/v1/me/token/"),
}


def test_schema_generates_with_zero_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    try:
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    except (CommandError, Exception) as exc:  # drf-spectacular raises SchemaGenerationError on any warning
        pytest.fail(f"schema generation warned or failed: {exc}")
    text = out.read_text()
    for path in (
        "/api/v1/auth/token/",
        "/api/v1/cases/{id}/scans/",
        "/api/v1/predictions/{id}/rerun/",
        "/api/v1/models/",
        "/api/v1/me/",
    ):
        assert f"{path}:" in text


def test_schema_and_docs_are_public_and_self_hosted(client, db):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert "tokenAuth" in document["components"]["securitySchemes"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/api/v1/cases/{id}/scans/" in html and "Error" in html
    # Nothing is loaded from another host (clinical networks often block them).
    assert not re.search(r"""(src|href)=["']https?://""", html)


@pytest.mark.slow
def test_fuzz_the_live_api_without_server_errors(
    live_server, transactional_db, settings, clinician, auditor, token_for, fake_model_dir
):
    """Requests generated from the live schema (valid and invalid), sent with a clinician's token, half of them
    aimed at records that exist: no answer may be a 5xx, and every answer must match the schema (documented status
    code, content type and body)."""
    import schemathesis
    from django.core.files.uploadedfile import SimpleUploadedFile
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from inference.services import model_version_register, scan_submit
    from scans.services import case_create
    from tests.api.conftest import make_png

    settings.HEMO_API_THROTTLE_RATES = {"token": "10000/minute", "upload": "10000/minute"}
    model, _ = model_version_register(path=fake_model_dir, activate=True)
    case = case_create(user=clinician, patient_ref="FUZZ-001")
    scan, prediction = scan_submit(case=case, user=clinician, files=[SimpleUploadedFile("s.png", make_png())])
    real_ids = {"cases": case.pk, "scans": scan.pk, "predictions": prediction.pk, "models": model.pk}
    headers = {"Authorization": f"Token {token_for(clinician)}"}

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    failures: list[str] = []
    calls = 0

    def fuzz(operation) -> None:
        nonlocal calls
        resource = operation.path.split("/")[3]
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @hypothesis_settings(
            max_examples=12, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(case=strategy, use_real_id=st.booleans())
        def run(case, use_real_id):
            nonlocal calls
            if use_real_id and case.path_parameters and "id" in case.path_parameters and resource in real_ids:
                case.path_parameters["id"] = str(real_ids[resource])
                if "index" in case.path_parameters:
                    case.path_parameters["index"] = 0
            response = case.call(base_url=live_server.url, headers=headers, timeout=30)
            calls += 1
            where = f"{operation.method.upper()} {case.formatted_path} {case.query!r} -> {response.status_code}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.text[:300]}")
            try:
                case.validate_response(
                    response, checks=[response_schema_conformance, status_code_conformance, content_type_conformance]
                )
            except BaseException as exc:  # schemathesis raises an exception group
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"{where}: {str(exc)[:600]}")

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in TOKEN_CHANGING:
            continue  # would rotate or revoke the token the fuzzing itself uses (covered in test_api_auth)
        fuzz(operation)

    assert calls > 100
    assert not failures, "\n".join(failures[:20])
