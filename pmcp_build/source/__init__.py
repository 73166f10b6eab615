"""The source stage: a folder or a fetched zip, walked into files and digests."""
