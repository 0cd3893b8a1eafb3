"""Pure decisions and the typed records they read: no I/O, no processes, no clock of their own.
They import only errors (and settings' types); everything else imports them."""
