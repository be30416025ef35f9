"""SQLite storage: schema migrations, the writer thread, and read queries."""
