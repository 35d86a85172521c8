"""ranker.storage.uri: a model URI into a typed location; unknown schemes refused by name;
credentials never printed. Also the credentials directory (ranker.storage.credentials)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ranker.storage.credentials import StorageConfig
from ranker.storage.errors import ModelCredentialsInvalid, UnsupportedModelURI
from ranker.storage.uri import (
    FileLocation,
    HTTPSLocation,
    S3Location,
    parse_model_uri,
    redact,
)


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://models/v2/", "models", "v2/"),
        ("s3://models/v2", "models", "v2/"),
        ("s3://models/team/ranker/v2/", "models", "team/ranker/v2/"),
        ("s3://models", "models", ""),
        ("S3://models/a%20b/", "models", "a b/"),
    ],
)
def test_s3_uris_name_a_bucket_and_a_directory_prefix(uri: str, bucket: str, prefix: str) -> None:
    assert parse_model_uri(uri) == S3Location(bucket=bucket, prefix=prefix)


def test_file_uris_and_plain_paths_are_local() -> None:
    assert parse_model_uri("file:///srv/models/v2") == FileLocation(Path("/srv/models/v2"))
    assert parse_model_uri("file://localhost/srv/m") == FileLocation(Path("/srv/m"))
    assert parse_model_uri("/srv/models/v2") == FileLocation(Path("/srv/models/v2"))
    assert parse_model_uri("models/v2") == FileLocation(Path("models/v2"))
    with pytest.raises(UnsupportedModelURI, match="only local files"):
        parse_model_uri("file://otherhost/srv/m")


def test_https_uris_keep_the_query_and_say_whether_they_are_an_archive() -> None:
    loc = parse_model_uri("https://h.example/m/v2.tar.gz?X-Amz-Signature=abc#frag")
    assert isinstance(loc, HTTPSLocation)
    assert loc.url == "https://h.example/m/v2.tar.gz?X-Amz-Signature=abc"
    assert (loc.name, loc.archive) == ("v2.tar.gz", "tar")
    assert parse_model_uri("https://h/x.ZIP").archive == "zip"  # type: ignore[union-attr]
    assert parse_model_uri("https://h/x.tgz").archive == "tar"  # type: ignore[union-attr]
    single = parse_model_uri("https://h/models/ranker.onnx")
    assert isinstance(single, HTTPSLocation) and single.archive is None
    for bad in ("https:///x.tar", "https://h/", "https://h/a/.."):
        with pytest.raises(UnsupportedModelURI):
            parse_model_uri(bad)


@pytest.mark.parametrize("uri", ["gs://b/m/", "hf://org/model", "http://h/m.tar", "ftp://h/m"])
def test_an_unknown_scheme_is_refused_naming_it_and_the_supported_ones(uri: str) -> None:
    with pytest.raises(UnsupportedModelURI) as caught:
        parse_model_uri(uri)
    message = str(caught.value)
    assert repr(uri.split("://")[0] + ":") in message
    for scheme in ("file://", "https://", "s3://"):
        assert scheme in message


def test_credentials_in_an_s3_uri_are_refused_without_being_echoed() -> None:
    with pytest.raises(UnsupportedModelURI) as caught:
        parse_model_uri("s3://AKIDSECRET:hunter2@bucket/v2/")
    assert "hunter2" not in str(caught.value) and "AKIDSECRET" not in str(caught.value)


def test_redact_drops_user_info_and_the_query() -> None:
    assert redact("https://user:pw@h.example:8443/m.tar?sig=s3cr3t") == (
        "https://***@h.example:8443/m.tar?<redacted>"
    )
    assert redact("s3://bucket/v2/") == "s3://bucket/v2/"
    assert redact("/plain/path") == "/plain/path"


def _secret_volume(root: Path, values: dict[str, str]) -> Path:
    """The layout kubelet gives a Secret volume: files behind ..data symlinks."""
    data = root / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    for key, value in values.items():
        (data / key).write_text(value)
    (root / "..data").symlink_to(data.name)
    for key in values:
        os.symlink(f"..data/{key}", root / key)
    return root


def test_a_mounted_secret_gives_the_config_and_its_repr_shows_no_value(tmp_path: Path) -> None:
    root = _secret_volume(
        tmp_path / "creds",
        {
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY\n",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG\n",
            "AWS_ENDPOINT_URL": "https://minio.example:9000",
            "S3_ADDRESSING_STYLE": "Path",
            "HTTPS_HEADERS": '{"Authorization": "Bearer tok-123"}',
            "ca.crt": "-----BEGIN CERTIFICATE-----\n...\n",
        },
    )
    config = StorageConfig.from_dir(root)
    assert config.access_key_id == "AKIAEXAMPLEKEY"
    assert config.secret_access_key == "wJalrXUtnFEMI/K7MDENG"
    assert config.addressing_style == "path"
    assert config.headers == {"Authorization": "Bearer tok-123"}
    assert config.ca_pem and config.ca_pem.startswith("-----BEGIN")
    shown = repr(config) + str(config)
    for secret in ("AKIAEXAMPLEKEY", "wJalrXUtnFEMI", "tok-123"):
        assert secret not in shown
    assert "AWS_SECRET_ACCESS_KEY" in shown
    scrubbed = config.scrub("key AKIAEXAMPLEKEY secret wJalrXUtnFEMI/K7MDENG hdr Bearer tok-123")
    assert "AKIAEXAMPLEKEY" not in scrubbed and "wJalrXUtnFEMI" not in scrubbed
    assert "tok-123" not in scrubbed


def test_the_environment_is_used_only_without_a_directory(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_REGION": "eu-west-3"}
    config = StorageConfig.from_env(env)
    assert (config.access_key_id, config.region, config.source) == ("a", "eu-west-3", "environment")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"HTTPS_HEADERS": "not json tok-999"}, "HTTPS_HEADERS"),
        ({"HTTPS_HEADERS": '{"X": 1}'}, "HTTPS_HEADERS"),
        ({"S3_ADDRESSING_STYLE": "sideways"}, "S3_ADDRESSING_STYLE"),
        ({"AWS_ACCESS_KEY_ID": "tok-999"}, "AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_an_unusable_secret_is_named_without_its_value(
    tmp_path: Path, values: dict[str, str], match: str
) -> None:
    root = _secret_volume(tmp_path / "creds", values)
    with pytest.raises(ModelCredentialsInvalid, match=match) as caught:
        StorageConfig.from_dir(root)
    assert "tok-999" not in str(caught.value)
