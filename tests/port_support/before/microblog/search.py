"""A tiny in-process full-text index, standing in for Elasticsearch."""

INDEX = {}


def add_to_index(id, text):
    for word in set(text.lower().split()):
        INDEX.setdefault(word, set()).add(id)


def remove_from_index(id):
    for ids in INDEX.values():
        ids.discard(id)


def query_index(word):
    return sorted(INDEX.get(word.lower(), ()))
