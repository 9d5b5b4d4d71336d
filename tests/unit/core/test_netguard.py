"""The outbound address guard (core.netguard): which addresses a webhook or a `url` input may reach."""

from __future__ import annotations

import ipaddress

import pytest

from core.netguard import AddressRefused, Allow, check_url, is_public

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("255.255.255.255", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True), ("192.0.2.1", False),
])
def test_public_addresses(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.0.0.1:6379/", "http://localhost:8000/x", "http://[::1]/", "http://10.0.0.8/",
    "http://169.254.169.254/latest/meta-data", "http://0.0.0.0:80/", "http://2130706433/",  # 127.0.0.1 as a number
    "http://0x7f.1/", "ftp://8.8.8.8/", "file:///etc/passwd", "gopher://8.8.8.8/", "http://user:pw@8.8.8.8/",
    "http:///nohost", "http://no-such-host.invalid/", "not a url",
])
def test_refused(url):
    with pytest.raises(AddressRefused):
        check_url(url, Allow.parse([]))


def test_the_allow_list_opens_named_hosts_addresses_and_networks():
    loopback = check_url("http://127.0.0.1:9000/hook", Allow.parse(["127.0.0.1"]))
    assert loopback.address == ipaddress.ip_address("127.0.0.1")
    assert check_url("http://10.1.2.3/", Allow.parse(["10.1.0.0/16"])).port == 80
    assert check_url("http://localhost:1/", Allow.parse(["localhost"])).host == "localhost"
    with pytest.raises(AddressRefused):
        check_url("http://127.0.0.2/", Allow.parse(["127.0.0.1"]))
    with pytest.raises(AddressRefused):
        check_url("http://10.2.0.1/", Allow.parse(["10.1.0.0/16"]))


def test_a_public_literal_is_pinned_with_its_host_header():
    target = check_url("https://8.8.8.8:8443/a/b?c=1#frag", Allow.parse([]))
    assert target.pinned_url() == "https://8.8.8.8:8443/a/b?c=1"
    assert target.host_header == "8.8.8.8:8443"
    six = check_url("http://[2606:4700:4700::1111]/", Allow.parse([]))
    assert six.pinned_url() == "http://[2606:4700:4700::1111]:80/" and six.host_header == "[2606:4700:4700::1111]"
