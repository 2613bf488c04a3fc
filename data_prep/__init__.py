"""Corpus preparation for charlm: text in, vocabulary + word-id arrays out."""
