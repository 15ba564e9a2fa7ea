"""guard's faster loading of the bundled Public Suffix List gives the package's own result."""

from publicsuffixlist import PublicSuffixList

from guard.mail import domains


def test_fast_psl_load_equals_the_package_parser():
    ours, theirs = domains._psl(), PublicSuffixList()
    assert ours._publicsuffix == theirs._publicsuffix
    assert ours._maxlabel == theirs._maxlabel
    for host in ("mail.crm.cat", "a.b.example.co.uk", "xn--80ak6aa92e.com", "bücher.de", "city.kawasaki.jp", "x.ck"):
        assert ours.privatesuffix(host) == theirs.privatesuffix(host)
