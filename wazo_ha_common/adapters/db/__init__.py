"""The only SQL helper, one module per job: session (connections, transactions, errors),
catalog (the copy's queries and statements), table_copy (the COPY engine), publishing (the
master's publication), logical (slots and the subscription of continuous mode)."""
