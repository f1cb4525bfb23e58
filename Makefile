# The README's contract: `make up` serves the stack, `make test` runs every test, `make down` stops.
.PHONY: up test down status install lint bench sam-local

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

# AWS SAM CLI's own emulation without Docker (README, "SAM local"): the stack's services, podman,
# the Lambda base image and .local/sam-build; then prints how to run `sam local start-api` and
# `sam local invoke`. Not on `make up`'s path.
sam-local:
	@FCFS_BUILD_PROFILE=debug scripts/stack.sh services
	@scripts/sam_local.sh prepare
	@scripts/sam_local.sh env

install:
	@scripts/install.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
