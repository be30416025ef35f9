"""SQLite storage: schema migrations, the writer (its own process, fed from the event loop), and read queries."""
