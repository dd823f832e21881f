"""The shared URL policy: schemes, hosts, credentials and addresses (invariant 6)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from pipeline_lib.url_policy import UrlPolicy, UrlRefused

PROD = UrlPolicy(frozenset({"https"}), (".example.com", "files.claims.net"), False)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://a.example.com/x", "scheme"),
        ("ftp://a.example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://user:pw@a.example.com/x", "credentials"),
        ("https://evil.com/x", "host"),
        ("https://example.com.evil.com/x", "host"),
        ("https:///nohost", "syntax"),
        ("", "syntax"),
        ("https://a.example.com:99999/x", "syntax"),
    ],
)
def test_static_refusals_name_the_rule(url, rule):
    with pytest.raises(UrlRefused) as err:
        PROD.check_url(url)
    assert err.value.rule == rule


def test_allowed_hosts_exact_and_suffix():
    assert PROD.check_url("https://a.b.example.com/x") == ("a.b.example.com", 443)
    assert PROD.check_url("https://example.com/x")[0] == "example.com"
    assert PROD.check_url("https://files.claims.net:8443/x") == ("files.claims.net", 8443)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "224.0.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:8.8.8.8",
        "240.0.0.1",
        "100.64.0.1",
    ],
)
def test_non_public_addresses_are_refused(address):
    open_policy = UrlPolicy(frozenset({"http", "https"}))
    with pytest.raises(UrlRefused) as err:
        open_policy.check_address(address)
    assert err.value.rule == "address"


def test_ip_literal_hosts_are_checked_without_dns():
    with pytest.raises(UrlRefused, match="169.254.169.254"):
        UrlPolicy(frozenset({"http"})).check_url("http://169.254.169.254/latest/meta-data")


def test_local_overlay_may_allow_loopback_but_never_mapped_addresses():
    local = UrlPolicy(frozenset({"http"}), (), True)
    local.check_address("127.0.0.1")
    with pytest.raises(UrlRefused):
        local.check_address("::ffff:127.0.0.1")
    with pytest.raises(UrlRefused):
        local.check_address("169.254.169.254")


def test_resolution_checks_every_address_without_connecting():
    def resolver(host, port, type):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    with pytest.raises(UrlRefused, match="10.0.0.5"):
        PROD.resolve("a.example.com", 443, resolver=resolver)


@pytest.mark.parametrize(
    "address", ["0.0.0.0", "::", "169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200"]
)
def test_unspecified_and_metadata_addresses_are_refused_even_when_private_ones_are_allowed(address):
    local = UrlPolicy(
        frozenset({"http", "https"}),
        allow_private_addresses=True,
        allowed_networks=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
    )
    with pytest.raises(UrlRefused, match="unspecified or a cloud metadata endpoint"):
        local.check_address(address)
