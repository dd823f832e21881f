import pytest

from pipeline_lib.config import load_settings
from pipeline_lib.download.content_policy import ContentPolicy, ContentRefused

POLICY = ContentPolicy.from_settings(load_settings("local").download)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.pdf", "application/pdf"),
        ("a.PDF", "Application/PDF; charset=binary"),
        ("a.docx", "application/octet-stream"),  # generic types never contradict the extension
        ("a.docx", "binary/octet-stream"),
        ("a.jpg", None),
        ("scan", "application/pdf"),  # no extension: the type decides
    ],
)
def test_accepted(name, content_type):
    POLICY.check_extension(name)
    POLICY.check_content_type(name, content_type)


def test_a_type_that_contradicts_the_extension_is_refused_naming_both():
    with pytest.raises(ContentRefused, match=r"served as text/html, which contradicts extension \.pdf"):
        POLICY.check_content_type("a.pdf", "text/html")


def test_an_extension_not_listed_is_refused_before_any_request():
    with pytest.raises(ContentRefused, match=r"extension \.exe is not allowed"):
        POLICY.check_extension("setup.exe")


def test_no_extension_and_a_generic_type_cannot_be_told_apart():
    with pytest.raises(ContentRefused, match="cannot tell the file type"):
        POLICY.check_content_type("blob", "application/octet-stream")


def test_config_rejects_a_malformed_mapping():
    from pipeline_lib.config import ConfigError

    with pytest.raises(ConfigError, match="download.content_types"):
        load_settings("local", overrides={"download": {"content_types": {"pdf!": ["application/pdf"]}}})
