"""`--help` tells the truth: every option of every verb says what it is for, and every
default a help text states is the default the code applies.

Help texts should state defaults with argparse's `%(default)s` (or `%(default)g`) so they
cannot drift; this test reads the text as printed, so a default typed by hand is held to
the code's too. Options a verb refuses are not offered: hidden from --help, refused with a
reason when given.
"""

from __future__ import annotations

import argparse
import re

import pytest

from inferchaos.cli import build_parser

#: how a help text states a default: "(default 3)", "(default: X)", "default: X", "defaults to X"
STATED = re.compile(r"\bdefault(?:s to|:)?\s+(?P<value>[^\s,;)]+)", re.IGNORECASE)
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def verbs() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


VERBS = verbs()


def options(verb: str) -> list[argparse.Action]:
    """What `inferchaos VERB --help` offers: every action but -h and the hidden ones."""
    return [a for a in VERBS[verb]._actions
            if not isinstance(a, argparse._HelpAction) and a.help is not argparse.SUPPRESS]


def printed_help(verb: str, action: argparse.Action) -> str:
    """The help text as --help prints it (with %(default)s and friends filled in)."""
    return VERBS[verb]._get_formatter()._expand_help(action)


def name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or action.dest


def agrees(stated: str, default: object) -> bool:
    """Does the text after "default" name this value?"""
    stated = stated.strip("`'\"").rstrip(".:")
    if isinstance(default, (int, float)) or (isinstance(default, str) and NUMBER.fullmatch(default)):
        number = NUMBER.match(stated)
        return number is not None and float(number.group()) == float(default)  # type: ignore[arg-type]
    if isinstance(default, (list, tuple)):
        return all(str(item) in stated for item in default)
    return stated == str(default)


def stated_defaults(text: str) -> list[str]:
    return [m.group("value") for m in STATED.finditer(text)]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_option_says_what_it_is_for(verb):
    missing = [name(a) for a in options(verb) if not (a.help and a.help.strip())]
    assert not missing, f"inferchaos {verb} --help: no help text for {', '.join(missing)}"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_stated_default_is_the_default(verb):
    wrong = []
    for action in options(verb):
        default = action.default
        # None / SUPPRESS: the code decides later, and the text says how; a flag is off;
        # an empty list is "none given" (append actions)
        if default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default == []:
            continue
        text = printed_help(verb, action)
        for stated in stated_defaults(text):
            if not agrees(stated, default):
                wrong.append(f"{name(action)}: help says default {stated!r}, the code's is {default!r} ({text!r})")
    assert not wrong, f"inferchaos {verb} --help:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize(("text", "default", "ok"), [
    ("replicas behind the LB (default 3)", 3, True),
    ("replicas behind the LB (default: 3)", 4, False),
    ("requests/s (default: 100)", 20.0, False),
    ("seconds between refreshes (default 1)", 1.0, True),
    ("polling interval (default 1 s)", 1.0, True),
    ("gaps: poisson or constant (default: poisson)", "poisson", True),
    ("where it lands; defaults to constant", "poisson", False),
    ("minutes; default: 900)", "900", True),
])
def test_the_check_itself_reads_a_stated_default(text, default, ok):
    assert all(agrees(s, default) for s in stated_defaults(text)) is ok and stated_defaults(text)


def test_load_says_its_own_rate():
    """`load` has no SLO file: its rate is its own, and its help says which."""
    from inferchaos.cli.load import DEFAULT_RATE

    (rate,) = [a for a in options("load") if "--load-rate" in a.option_strings]
    assert rate.default == DEFAULT_RATE and f"(default: {DEFAULT_RATE:g})" in printed_help("load", rate)


@pytest.mark.parametrize("refused", ["--load-users", "--replica-cmd", "--ready-path"])
def test_load_does_not_offer_what_it_refuses(refused, capsys):
    offered = {o for a in options("load") for o in a.option_strings}
    assert refused not in offered
    assert refused not in VERBS["load"].format_help()
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["load", "http://127.0.0.1:9", refused, "3"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("inferchaos: error:")
    assert refused in err and ("open loop" in err or "local cluster" in err)


def test_up_offers_what_the_local_cluster_takes():
    offered = {o for a in options("up") for o in a.option_strings}
    assert {"--replica-cmd", "--ready-path", "--startup-timeout"} <= offered
