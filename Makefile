# wazo-ha: the two README commands are `make demo` and `make check`.
PYTHON := /usr/bin/python3
VERSION := $(shell $(PYTHON) -c 'import wazo_ha_common; print(wazo_ha_common.__version__)')
# stdeb always adds a Debian revision (stdeb.cfg Debian-Version): the package is VERSION-REVISION
DEBIAN_REVISION := $(shell $(PYTHON) -c 'import configparser; c = configparser.ConfigParser(); \
	c.read("stdeb.cfg"); print(c["wazo-ha"]["debian-version"])')
DEB := dist/wazo-ha_$(VERSION)-$(DEBIAN_REVISION)_all.deb
# the date of stdeb's changelog entry, hence of every file in the .deb: the last commit's
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

# what the tests, the demo and the package build need on a fresh Debian 12 (as root)
APT_DEPS := postgresql-15 postgresql-contrib openssh-server openssh-client rsync \
	iputils-ping iproute2 util-linux procps openssl cron nftables kamailio tcpdump sip-tester \
	python3-psycopg2 python3-requests python3-netifaces python3-pytest python3-pytest-xdist \
	python3-yaml fail2ban \
	python3-stdeb debhelper dh-python python3-all python3-setuptools lintian fakeroot dpkg-dev

.PHONY: check demo demo-fast deb deps clean bench-replication bench-failover bench-recovery-point \
	bench-phones

deps:
	@missing=$$(for p in $(APT_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

# the suite in TEST_JOBS processes (pytest-xdist; whole files to each, so that a file's shared
# testbed is built once; 0: one process), then the package tests alone: they install the .deb
# on the host, which no live testbed may see. Meanwhile tests/package/debs.py builds the two
# .debs they install (this tree's, the previous release's for the upgrade test): a build
# touches no installed package; it runs in a session of its own, ended with the recipe
# (Ctrl-C too). Five processes on two cores: a test mostly waits (for probes, timeouts,
# PostgreSQL, ssh); with four the cores were busy 42 % of the time (2026-12-06, 1021 tests:
# 667 s with three processes, 588-612 s with four, 537-571 s with five; 2026-12-07, 1028
# tests: 525-579 s, the whole make check 10 min 22 s - 11 min 25 s in fresh clones)
TEST_JOBS ?= 5
CHECK_DEBS := $(CURDIR)/build/check-debs
check: deps
	@mkdir -p $(CHECK_DEBS)
	setsid $(PYTHON) tests/package/debs.py $(CHECK_DEBS) $(CURDIR)/$(DEB) \
		>$(CHECK_DEBS)/build.log 2>&1 & debs=$$!; \
	trap 'kill -TERM -$$debs 2>/dev/null' EXIT; trap 'exit 130' INT TERM HUP; \
	$(PYTHON) -m pytest -n $(TEST_JOBS) --dist loadfile --ignore=tests/package; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	wait $$debs; trap - EXIT; \
	WAZO_HA_DEBS_BUILT=$(CHECK_DEBS) $(PYTHON) -m pytest tests/package; prc=$$?; \
	if [ $$prc -eq 5 ]; then echo "pytest collected no package tests: failing" >&2; exit 1; fi; \
	[ $$rc -eq 0 ] && exit $$prc; exit $$rc

demo: deps
	$(PYTHON) demo/demo.py

demo-fast: deps
	$(PYTHON) demo/demo.py --fast

# built by stdeb: the sdist (MANIFEST.in) carries debian/'s maintainer scripts and dh files;
# stdeb writes debian/control, rules and changelog from stdeb.cfg and setup.py into deb_dist/
deb: deps
	rm -rf deb_dist wazo_ha.egg-info $(DEB)
	mkdir -p dist
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(PYTHON) setup.py --command-packages=stdeb.command bdist_deb
	cp deb_dist/$(notdir $(DEB)) $(DEB)
	rm -f wazo-ha-$(VERSION).tar.gz
	lintian --fail-on error,warning $(DEB)
	@echo "built $(DEB)"

bench-replication: deps
	$(PYTHON) bench/replication.py

bench-failover: deps
	$(PYTHON) bench/failover.py

bench-recovery-point: deps
	$(PYTHON) bench/recovery_point.py

# the phones' view (docs/benchmarks.md): the grid scaled by 0.2, then ours-300 in real time
bench-phones: deps
	$(PYTHON) bench/phones.py --scale 0.2 --trials 2
	$(PYTHON) bench/phones.py --scale 1 --trials 1 --scenarios ours-300

clean:
	rm -rf build dist deb_dist *.egg-info wazo-ha-*.tar.gz
	find . -name __pycache__ -prune -exec rm -rf {} +
