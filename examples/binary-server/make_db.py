"""Make chinook.db, a tiny slice of the Chinook sample database (no download)."""

import sqlite3
from pathlib import Path

path = Path(__file__).with_name("chinook.db")
path.unlink(missing_ok=True)
with sqlite3.connect(path) as db:
    db.execute("CREATE TABLE artists (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    db.executemany("INSERT INTO artists VALUES (?, ?)",
                   [(1, "AC/DC"), (2, "Accept"), (3, "Aerosmith"), (4, "Alanis Morissette")])
print(f"wrote {path}")
