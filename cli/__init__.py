"""The command line: `python main.py <command>`. It talks to the HTTP API through the typed
client (the `jobs_client` package in client/), like any other caller; only `migrate` and
`limit` (an operator's settings, not an owner's) touch the database directly.

    python main.py submit --preset text-stats --content "Hello there." --wait
    python main.py submit --preset echo --content hi --in 10m    # or --at 2026-12-01T09:00:00Z
    python main.py submit --preset echo --content hi --callback-url https://example.com/hook
    python main.py submit --preset echo --content hi --priority 9 --limit-key model-api
    python main.py get ID [--wait S] | list [--state S] [--preset P] | events ID | cancel ID
    python main.py retry ID | stats | history [--window day] | limits | health
    python main.py webhook-secret rotate             # a new signing secret, shown once
    python main.py limits set model-api --rate 60/1m [--max-running 4] | limits get KEY |
        limits delete KEY | limits list           # your key limits (and the presets')
    python main.py submit-many jobs.jsonl [--key-prefix nightly-2026-12-07]   # 1,000 a request
    python main.py bulk-cancel --state PENDING --preset echo [--dry-run] [--yes] | bulk-retry --all
    python main.py token alice                       # a dev HS256 token
    python main.py schedule add --cron '0 9 * * MON-FRI' --timezone Europe/Riga --preset echo \\
        --content hi | schedule edit ID --cron '0 10 * * *' | list | get ID | pause ID |
        resume ID | delete ID | events ID
    python main.py limit set hs256:alice 2 | limit clear OWNER | limit list   # database
    python main.py limit quota hs256:alice pending 1000 | submits-per-s 20 | ... clear
    python main.py sweep                             # one maintenance pass, as the scheduler
    python main.py migrate                           # alembic upgrade head

Where it finds the API, first match wins: the flags (--url, --token), the variables
(JOBS_API_URL, JOBS_TOKEN; AUTH_HS256_SECRET to mint a token for JOBS_USER, default `dev`), and
last the file `make dev` writes (.local/dev-client.json), which is used only for a loopback URL.
On a terminal it prints tables and summaries; otherwise, or with --json, the API's JSON.
Errors are one line; an API error exits 1, an API that cannot be reached exits 2.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from cli.app import main as run_main

    return run_main(argv)
