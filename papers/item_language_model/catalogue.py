"""A synthetic catalogue with the MovieLens-100k schema (users x items interactions, item title + genres).

MovieLens is not in the offline mirror, so the data are generated: items carry latent taste factors (one
axis per genre), their text (title words and genre names) is generated from the same factors, so text and
collaborative signal agree, and each user watches a sequence of items drawn from a softmax over
``beta * <u, v_i>`` without replacement. The split is leave-last-out per user (ILM Sec. 4 uses the OpenP5
sequential split; the catalog entry's design uses leave-last-out). Item CF embeddings are PureSVD factors of
the training interactions (a matrix-factorisation embedding, Sec. 3.1 "CF item embeddings").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

GENRES = ["action", "comedy", "drama", "horror", "romance", "scifi"]
# title words: the adjective tells the primary genre, the noun the secondary one (8 of each per genre)
ADJECTIVES = {
    "action": ["fast", "furious", "deadly", "iron", "savage", "burning", "lethal", "rogue"],
    "comedy": ["silly", "crazy", "goofy", "happy", "wacky", "lucky", "funny", "jolly"],
    "drama": ["quiet", "broken", "lonely", "distant", "fragile", "bitter", "tender", "silent"],
    "horror": ["haunted", "bloody", "cursed", "wicked", "rotten", "grim", "hollow", "sinister"],
    "romance": ["sweet", "lovely", "golden", "secret", "gentle", "charming", "warm", "summer"],
    "scifi": ["quantum", "cosmic", "robotic", "stellar", "orbital", "cyber", "atomic", "galactic"],
}
NOUNS = {
    "action": ["bullet", "fist", "mission", "chase", "strike", "fury", "squad", "target"],
    "comedy": ["party", "wedding", "vacation", "prank", "roommate", "circus", "picnic", "sitcom"],
    "drama": ["winter", "letter", "river", "promise", "memory", "harvest", "journey", "farewell"],
    "horror": ["ghost", "crypt", "zombie", "shadow", "curse", "asylum", "nightmare", "cellar"],
    "romance": ["kiss", "heart", "valentine", "bride", "sunset", "darling", "rose", "dance"],
    "scifi": ["planet", "android", "galaxy", "starship", "portal", "nebula", "cyborg", "comet"],
}


@dataclass
class Catalogue:
    titles: list[str]            # n_items titles ("adj noun"), unique
    genres: list[tuple[str, str]]  # (primary, secondary) genre per item
    factors: np.ndarray          # (n_items, n_genres) latent item factors
    sequences: np.ndarray        # (n_users, seq_len) item ids in watch order, no repeats per user
    genre_names: tuple[str, ...] = tuple(GENRES)  # the genre vocabulary, in a fixed order
    source: str = "synthetic"    # "synthetic" or "movielens_100k"

    @property
    def n_items(self) -> int:
        return len(self.titles)

    @property
    def n_users(self) -> int:
        return self.sequences.shape[0]

    def item_text(self, i: int) -> str:
        """The item's description (the ``u.item`` title + genres fields as a sentence)."""
        g1, g2 = self.genres[i]
        return f"{self.titles[i]} is a {g1} {g2} movie ."

    def genre_list_texts(self, n_lists: int, list_len: int, seed: int) -> list[str]:
        """World knowledge for the LM's pretraining, not interaction data: ``n_lists`` lists per genre of
        ``list_len`` titles whose primary genre it is ("action movies : fast bullet , iron fist , ... .")."""
        rng = np.random.default_rng(seed)
        out = []
        for g in self.genre_names:
            members = [i for i, (g1, _) in enumerate(self.genres) if g1 == g]
            for _ in range(n_lists if len(members) >= list_len else 0):
                pick = rng.choice(members, size=list_len, replace=False)
                out.append(f"{g} movies : " + " , ".join(self.titles[i] for i in pick) + " .")
        return out

    def genre_first_text(self, i: int) -> str:
        g1, g2 = self.genres[i]
        return f"a {g1} {g2} movie : {self.titles[i]} ."


def make_catalogue(n_items: int, n_users: int, seq_len: int, beta: float, seed: int,
                   factor_noise: float = 0.3) -> Catalogue:
    """Items: primary genre g1 and secondary g2 != g1, factors ``e_g1 + 0.5 e_g2 + noise``; title = an
    adjective of g1 and a noun of g2 (unique). Users: taste ``2 e_a + e_b + noise`` over two favourite
    genres; each watches ``seq_len`` distinct items drawn by softmax(beta * <u, v_i>) without replacement."""
    rng = np.random.default_rng(seed)
    G = len(GENRES)
    pairs = [(a, b) for a in range(G) for b in range(G) if a != b]
    if n_items > len(pairs) * 64:
        raise ValueError("too many items for unique titles")
    used: set[str] = set()
    titles, genres = [], []
    factors = np.zeros((n_items, G))
    for i in range(n_items):
        a, b = pairs[rng.integers(len(pairs))]
        while True:
            t = f"{ADJECTIVES[GENRES[a]][rng.integers(8)]} {NOUNS[GENRES[b]][rng.integers(8)]}"
            if t not in used:
                break
        used.add(t)
        titles.append(t)
        genres.append((GENRES[a], GENRES[b]))
        factors[i, a] += 1.0
        factors[i, b] += 0.5
        factors[i] += factor_noise * rng.standard_normal(G)
    if seq_len > n_items:
        raise ValueError("seq_len exceeds n_items")
    seqs = np.zeros((n_users, seq_len), dtype=np.int64)
    for u in range(n_users):
        a, b = rng.choice(G, size=2, replace=False)
        taste = factor_noise * rng.standard_normal(G)
        taste[a] += 2.0
        taste[b] += 1.0
        logits = beta * factors @ taste
        # Gumbel top-k = sequential sampling without replacement from softmax(logits)
        keys = logits + rng.gumbel(size=n_items)
        seqs[u] = np.argsort(-keys, kind="stable")[:seq_len]
    return Catalogue(titles, genres, factors, seqs)


def normalise_title(title: str) -> str:
    """A MovieLens title as words the word-level LM can read: the trailing "(year)" dropped, lower case,
    every run of characters other than letters and digits a single space ("Se7en (1995)" -> "se7en",
    "Twelve Monkeys (1995)" -> "twelve monkeys", "Shawshank Redemption, The (1994)" -> "shawshank
    redemption the")."""
    title = re.sub(r"\s*\(\d{4}\)\s*$", "", title.strip())
    return " ".join(re.sub(r"[^0-9a-z]+", " ", title.lower()).split()) or "untitled"


def load_movielens(directory, n_users: int, seq_len: int) -> Catalogue:
    """MovieLens 100K (``data/movielens_100k/ml-100k``: ``u.data``, ``u.item``, ``u.genre``) in the schema of
    :func:`make_catalogue`: the first ``n_users`` users (by id), each user's last ``seq_len`` rated movies
    in time order (ties by movie id; every user has >= 20 ratings), titles via :func:`normalise_title`
    (made unique with a numeric suffix where two normalise alike), and each movie's first two listed genres
    (its only genre twice when it has one). ``factors`` is empty: there are no generating factors."""
    from pathlib import Path

    directory = Path(directory)
    genre_names = [line.split("|")[0] for line in (directory / "u.genre").read_text(encoding="latin-1").splitlines()
                   if line.strip()]
    genre_names = [re.sub(r"[^a-z]+", "", g.lower()) for g in genre_names]
    titles, genres = [], []
    seen: dict[str, int] = {}
    for line in (directory / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if int(fields[0]) != len(titles) + 1:
            raise ValueError(f"u.item: expected movie id {len(titles) + 1}, got {fields[0]}")
        t = normalise_title(fields[1])
        seen[t] = seen.get(t, 0) + 1
        titles.append(t if seen[t] == 1 else f"{t} {seen[t]}")
        flags = [genre_names[j] for j, f in enumerate(fields[-len(genre_names):]) if f == "1"] or [genre_names[0]]
        genres.append((flags[0], flags[1] if len(flags) > 1 else flags[0]))
    ratings = np.loadtxt(directory / "u.data", dtype=np.int64)  # user, item, rating, timestamp
    users = np.unique(ratings[:, 0])[:n_users]
    if len(users) < n_users:
        raise ValueError(f"MovieLens has {len(users)} users; n_users={n_users} asked for more")
    seqs = np.zeros((n_users, seq_len), dtype=np.int64)
    for r, u in enumerate(users):
        rows = ratings[ratings[:, 0] == u]
        rows = rows[np.lexsort((rows[:, 1], rows[:, 3]))]  # by timestamp, then movie id
        if len(rows) < seq_len:
            raise ValueError(f"user {u} has {len(rows)} ratings < seq_len={seq_len}")
        seqs[r] = rows[-seq_len:, 1] - 1
    used = sorted({g for pair in genres for g in pair}, key=genre_names.index)
    return Catalogue(titles, genres, np.zeros((len(titles), 0)), seqs, tuple(used), "movielens_100k")


def split_leave_last_out(seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train part, held-out last item) per user."""
    return seqs[:, :-1], seqs[:, -1]


def next_item_examples(train_seqs: np.ndarray, history: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows over each user's training sequence: (N, history) item ids and (N,) next items."""
    hs, ys = [], []
    for t in range(history, train_seqs.shape[1]):
        hs.append(train_seqs[:, t - history:t])
        ys.append(train_seqs[:, t])
    return np.concatenate(hs), np.concatenate(ys)


def co_consumed_pairs(train_seqs: np.ndarray, window: int) -> np.ndarray:
    """(P, 2) ordered pairs of items watched by the same user within ``window`` steps (Sec. 3.2 item-item
    contrastive positives)."""
    out = []
    for d in range(1, window + 1):
        out.append(np.stack([train_seqs[:, :-d].ravel(), train_seqs[:, d:].ravel()], 1))
    return np.concatenate(out)


def puresvd_item_embeddings(train_seqs: np.ndarray, n_items: int, dim: int) -> np.ndarray:
    """PureSVD item factors ``V_k sqrt(S_k)`` of the binary user x item matrix, scaled to unit RMS."""
    n_users = train_seqs.shape[0]
    R = np.zeros((n_users, n_items))
    R[np.repeat(np.arange(n_users), train_seqs.shape[1]), train_seqs.ravel()] = 1.0
    _, s, vt = np.linalg.svd(R, full_matrices=False)
    emb = vt[:dim].T * np.sqrt(s[:dim])
    # fix the sign of each factor (SVD's sign is arbitrary) so the result is deterministic across LAPACKs
    signs = np.sign(emb[np.abs(emb).argmax(0), np.arange(dim)])
    emb = emb * signs
    return emb / np.sqrt((emb ** 2).mean())


def sample_negatives(seqs: np.ndarray, users: np.ndarray, n_items: int, n_neg: int, seed: int) -> np.ndarray:
    """(len(users), n_neg) items each user never watched (sampled without replacement)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(users), n_neg), dtype=np.int64)
    for r, u in enumerate(users):
        unseen = np.setdiff1d(np.arange(n_items), seqs[u])
        out[r] = rng.choice(unseen, size=n_neg, replace=False)
    return out


def hit_and_ndcg(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` (column 0 = the positive, the rest negatives): HR@k and NDCG@k. Ties count
    against the positive (rank = 1 + number of negatives scoring >= it), so a constant scorer gets no
    credit from ties."""
    rank = 1 + (scores[:, 1:] >= scores[:, :1]).sum(1)
    hit = (rank <= k).astype(float)
    ndcg = np.where(rank <= k, 1.0 / np.log2(rank + 1), 0.0)
    return hit, ndcg
