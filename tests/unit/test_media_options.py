"""Which media option sets ``twistd chatd`` takes with ``--redis`` (chatd/tap.py): in
a cluster every node serves every upload, so the files must be shared."""

from __future__ import annotations

import pytest
from twisted.python import usage

from chatd.tap import Options, media_off

SECRET = ["--jwt-secret", "s" * 32]


def parsed(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_a_local_media_dir_in_a_cluster_is_refused_saying_why():
    with pytest.raises(usage.UsageError) as e:
        parsed("--redis", "redis://r", *SECRET, "--media-dir", "/srv/media")
    assert "--media-dir with --redis" in str(e.value) and "--media-shared" in str(e.value)


@pytest.mark.parametrize(
    "extra",
    [
        ["--media-dir", "/mnt/nfs/media", "--media-shared"],
        ["--media-dir", "/srv/scratch", "--media-s3", "s3://b/p?region=r"],
        ["--media-s3", "s3://b/p"],
    ],
    ids=["shared-dir", "s3-and-scratch-dir", "s3"],
)
def test_a_shared_store_in_a_cluster_serves_media(extra):
    assert media_off(parsed("--redis", "redis://r", *SECRET, *extra)) is None


def test_a_cluster_without_media_options_starts_with_uploads_off():
    options = parsed("--redis", "redis://r", *SECRET)
    assert "media uploads are off" in media_off(options)


def test_a_single_node_needs_nothing_shared():
    assert media_off(parsed(*SECRET, "--media-dir", "/srv/media")) is None
    parsed("--media-dir", "/srv/media")  # no token verifier: no uploads, nothing refused
    parsed("--redis", "redis://r", "--media-dir", "/srv/media")


def test_a_cluster_signing_with_a_key_of_its_own_per_process_is_refused(tmp_path, monkeypatch):
    """``--jwt-public-key`` and no ``--media-url-key``: each node would sign media URLs
    with a random key, and a URL from one node would be refused by the others."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    monkeypatch.delenv("CHATD_MEDIA_URL_KEY", raising=False)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    public = ["--jwt-public-key", str(pem), "--jwt-algorithm", "ES256"]
    with pytest.raises(usage.UsageError) as e:
        parsed("--redis", "redis://r", *public, "--media-s3", "s3://b/p")
    assert "--media-url-key" in str(e.value)
    parsed("--redis", "redis://r", *public, "--media-s3", "s3://b/p", "--media-url-key", "k" * 32)
    parsed(*public, "--media-s3", "s3://b/p")  # one node: a random key is only a warning
