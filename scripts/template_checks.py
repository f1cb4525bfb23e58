"""cfn-lint and checkov on template.yaml, with the findings template-checks.yaml accepts (and only
those). Run by scripts/test.sh with the checkov venv's Python (it brings PyYAML):
    python template_checks.py CFN_LINT CHECKOV TEMPLATE CHECKS_FILE
Fails on a finding not accepted there, and on an accepted one that no longer occurs."""

import json
import subprocess
import sys

import yaml


def main() -> int:
    cfn_lint, checkov, template, checks_file = sys.argv[1:5]
    with open(checks_file) as f:
        checks = yaml.safe_load(f)
    failed = False

    for entry in checks["checkov"]:
        if not entry.get("reason", "").strip():
            print(f"template-checks: {entry['check']} has no reason", file=sys.stderr)
            failed = True

    ignore = checks["cfn_lint"]["ignore"] or []
    args = [cfn_lint, template] + (["--ignore-checks", *ignore] if ignore else [])
    if subprocess.run(args).returncode != 0:
        print("cfn-lint: findings above (accept one only in template-checks.yaml, with its reason)", file=sys.stderr)
        failed = True
    else:
        print(f"cfn-lint: clean ({len(ignore)} rule(s) ignored by template-checks.yaml)")

    # --skip-download: no call to Prisma Cloud for guidelines (offline, and nothing to send).
    out = subprocess.run(
        [checkov, "-f", template, "--framework", "cloudformation", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
    )
    try:
        results = json.loads(out.stdout)["results"]
    except (ValueError, KeyError):
        print(out.stdout[-2000:], out.stderr[-2000:], "checkov: no JSON results", sep="\n", file=sys.stderr)
        return 1
    if results.get("parsing_errors"):
        print(f"checkov: parsing errors {results['parsing_errors']}", file=sys.stderr)
        failed = True
    found = {(c["check_id"], c["resource"]) for c in results["failed_checks"]}

    def accepted(check: str, resource: str) -> bool:
        return any(e["check"] == check and ("*" in e["resources"] or resource in e["resources"]) for e in checks["checkov"])

    for check, resource in sorted(found):
        if not accepted(check, resource):
            name = next(c["check_name"] for c in results["failed_checks"] if (c["check_id"], c["resource"]) == (check, resource))
            print(f"checkov: {check} ({name}) fails for {resource}, not accepted in template-checks.yaml", file=sys.stderr)
            failed = True
    for entry in checks["checkov"]:
        for resource in entry["resources"]:
            if not any(c == entry["check"] and (resource == "*" or r == resource) for c, r in found):
                print(f"checkov: {entry['check']} for {resource} is accepted in template-checks.yaml but no longer fails: remove it", file=sys.stderr)
                failed = True
    passed = len(results["passed_checks"])
    print(f"checkov: {passed} passed, {len(found)} failed, all accepted in template-checks.yaml" if not failed else "checkov: FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
