"""Small helpers every layer uses: ids and clocks, hashing, a bounded LRU, reading a user-named JSON file."""
