"""Write chinook.db, a small slice of the Chinook sample database (no download).

The committed chinook.db was made by this script; run it again to start afresh."""

import sqlite3
from pathlib import Path

ARTISTS = [(1, "AC/DC"), (2, "Accept"), (3, "Aerosmith"), (4, "Alanis Morissette")]
ALBUMS = [
    (1, "For Those About To Rock We Salute You", 1),
    (2, "Balls to the Wall", 2),
    (3, "Restless and Wild", 2),
    (4, "Let There Be Rock", 1),
    (5, "Big Ones", 3),
    (6, "Jagged Little Pill", 4),
]

path = Path(__file__).with_name("chinook.db")
path.unlink(missing_ok=True)
with sqlite3.connect(path) as db:
    db.execute("CREATE TABLE artists (ArtistId INTEGER PRIMARY KEY, Name TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE albums (AlbumId INTEGER PRIMARY KEY, Title TEXT NOT NULL,"
        " ArtistId INTEGER NOT NULL REFERENCES artists(ArtistId))"
    )
    db.executemany("INSERT INTO artists VALUES (?, ?)", ARTISTS)
    db.executemany("INSERT INTO albums VALUES (?, ?, ?)", ALBUMS)
db.close()
print(f"wrote {path}")
