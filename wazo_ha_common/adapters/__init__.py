"""How the outside world is reached: processes (system, the only subprocess importer), SQL
(db), the Wazo REST APIs (wazo_api), the master's probes (probes)."""
