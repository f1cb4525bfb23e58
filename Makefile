# The README's contract: `make up` serves the stack, `make test` runs every test, `make down` stops.
.PHONY: up test down status install lint bench

up:
	@scripts/stack.sh up

test:
	@scripts/test.sh

bench:
	@scripts/bench.sh

down:
	@scripts/stack.sh down

status:
	@scripts/stack.sh status

install:
	@scripts/install.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
