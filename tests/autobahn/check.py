#!/usr/bin/env python3
"""Checks an Autobahn|Testsuite fuzzingclient report against tests/autobahn/expected.txt and
writes a summary of it.
    tests/autobahn/check.py REPORTS_DIR EXPECTED SUMMARY
Exits 1, naming each case, when a case got a behavior or close code its line does not allow,
when the number of cases is off, or when a line of EXPECTED matches no case. The counts of
OK and NON-STRICT vary from run to run, so they are reported, never compared."""
import collections
import fnmatch
import json
import os
import sys


def load_expected(path):
    total, rules = None, []
    for n, raw in enumerate(open(path), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split(None, 3)
        if words[0] == "total" and len(words) == 2:
            total = int(words[1])
            continue
        if len(words) < 4:
            sys.exit("%s:%d: want CASES BEHAVIORS CLOSE WHY, got %r" % (path, n, raw.rstrip()))
        cases, behaviors, close, why = words
        rules.append({
            "line": n,
            "cases": cases,
            "behaviors": set(behaviors.split("|")),
            "close": None if close == "-" else int(close),
            "why": why,
            "used": 0,
        })
    if total is None:
        sys.exit("%s: no `total N` line" % path)
    return total, rules


def key(case):
    return [int(x) for x in case.split(".")]


def main():
    reports, expected, summary = sys.argv[1:4]
    total, rules = load_expected(expected)
    index = json.load(open(os.path.join(reports, "index.json")))["keepty"]
    default = {"line": None, "behaviors": {"OK"}, "close": None, "why": "", "used": 0}
    out, problems = [], []
    for case in sorted(index, key=key):
        got = index[case]
        report = json.load(open(os.path.join(reports, got["reportfile"])))
        code = report.get("remoteCloseCode")
        rule = next((r for r in rules if fnmatch.fnmatchcase(case, r["cases"])), default)
        rule["used"] += 1
        where = "%s line %s" % (expected, rule["line"]) if rule["line"] else "no line matches it, so it must be OK"
        wrong = []
        if got["behavior"] not in rule["behaviors"]:
            wrong.append("behavior %s, allowed %s" % (got["behavior"], "|".join(sorted(rule["behaviors"]))))
        if rule["close"] is not None and code != rule["close"]:
            wrong.append("close code %s, expected %s" % (code, rule["close"]))
        # A clean closing handshake is part of passing; informational and refused cases are
        # judged by their close code instead.
        if got["behavior"] in ("OK", "NON-STRICT") and got["behaviorClose"] != "OK":
            wrong.append("closing handshake %s" % got["behaviorClose"])
        if wrong:
            problems.append("case %s: %s (%s); report %s" % (
                case, "; ".join(wrong), where, os.path.join(reports, got["reportfile"])))
        elif got["behavior"] != "OK":
            out.append("%-7s %-13s close %s: %s" % (case, got["behavior"], code, rule["why"]))
    if len(index) != total:
        problems.append("%d cases ran, %s says %d" % (len(index), expected, total))
    for r in rules:
        if not r["used"]:
            problems.append("%s line %d (%s) matches no case" % (expected, r["line"], r["cases"]))

    counts = collections.Counter(v["behavior"] for v in index.values())
    head = [
        "Autobahn|Testsuite fuzzingclient against keepty /echo; 12.* and 13.* (compression) excluded",
        "cases: %d; " % len(index) + ", ".join("%s %d" % kv for kv in sorted(counts.items())),
        "checked against %s: %s" % (expected, "%d unexpected" % len(problems) if problems else "as expected"),
        "",
    ]
    text = "\n".join(head + out + [""] + (["UNEXPECTED:"] + problems if problems else [])) + "\n"
    open(summary, "w").write(text)
    sys.stdout.write(text)
    if problems:
        sys.stderr.write("tests/autobahn: %d result(s) not in %s:\n  %s\n" % (
            len(problems), expected, "\n  ".join(problems)))
        sys.exit(1)


main()
