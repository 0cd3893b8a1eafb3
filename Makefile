# wazo-ha: the two README commands are `make demo` and `make check`.
PYTHON := /usr/bin/python3
VERSION := $(shell $(PYTHON) -c 'import wazo_ha_common; print(wazo_ha_common.__version__)')
DEB := dist/wazo-ha_$(VERSION)_all.deb

# what the tests, the demo and the package build need on a fresh Debian 12 (as root)
APT_DEPS := postgresql-15 postgresql-contrib openssh-server openssh-client rsync \
	iputils-ping iproute2 util-linux procps openssl cron nftables kamailio \
	python3-psycopg2 python3-requests python3-netifaces python3-pytest \
	debhelper dh-python python3-all python3-setuptools lintian fakeroot dpkg-dev

.PHONY: check demo demo-fast deb deps clean bench-replication bench-failover

deps:
	@missing=$$(for p in $(APT_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

check: deps
	$(PYTHON) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

demo: deps
	$(PYTHON) demo/demo.py

demo-fast: deps
	$(PYTHON) demo/demo.py --fast

deb: deps
	rm -f $(DEB)
	mkdir -p dist
	dpkg-checkbuilddeps
	debian/rules clean
	debian/rules build
	debian/rules binary
	lintian --fail-on error $(DEB)
	@echo "built $(DEB)"

bench-replication: deps
	$(PYTHON) bench/replication.py

bench-failover: deps
	$(PYTHON) bench/failover.py

clean:
	rm -rf build dist .pybuild debian/wazo-ha debian/.debhelper debian/files \
		debian/*.substvars debian/*.debhelper.log debian/debhelper-build-stamp *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
