"""Amplitude IDs: a stable integer per person, with anonymous devices merged into users.

Rules (reference §1.3/§5.1 ``amplitude_id``, ``data.merged_amplitude_id``):

* a new device seen without a user gets a fresh anonymous amplitude_id;
* a new user_id on a device that is still anonymous inherits that device's amplitude_id;
* a known user seen on a still-anonymous device absorbs it: the device's amplitude_id is
  merged into the user's, so its earlier events join the user (resolved at read time);
* a device already tied to another user stays with that user (shared devices are not merged).

User properties live here too, keyed by the canonical amplitude_id, because merging moves them.
"""

from __future__ import annotations

from typing import Any

FIRST_AMPLITUDE_ID = 100_000_000_001
# Stored as the amplitude_id of an event naming no person (a $groupidentify sent with only
# groups): never handed out, merged or deleted, and exported as null.
NO_PERSON = 0


class Identities:
    """users/devices -> amplitude_id, the merge map, and per-person user properties."""

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.devices: dict[str, int] = {}
        self.merged: dict[int, int] = {}
        self.owned: set[int] = set()  # amplitude_ids that belong to a user_id
        self.user_props: dict[int, dict[str, Any]] = {}
        self.next_id = FIRST_AMPLITUDE_ID
        self.dirty = False
        # New mappings since the last snapshot, journaled with each request before its events
        # are stored, so a killed process never hands out an amplitude_id twice. Entries: ["u", user_id, aid],
        # ["d", device_id, aid], ["m", source, target], ["p", aid, user properties]; the
        # server adds ["g", group key, group properties] and ["c", stored, duplicates], and
        # a deletion ["f", [canonical aid, ...], null] (the store writes it).
        self.journal: list[list[Any]] = []

    def canonical(self, aid: int) -> int:
        merged = self.merged
        while aid in merged:
            aid = merged[aid]
        return aid

    def _new(self) -> int:
        aid = self.next_id
        self.next_id += 1
        return aid

    def assign(self, user_id: str | None, device_id: str | None) -> int:
        """The canonical amplitude_id of an event with these IDs (creating/merging as needed)."""
        ad = self.devices.get(device_id) if device_id else None
        if ad is not None and ad in self.merged:
            ad = self.canonical(ad)
        if not user_id:
            if ad is None:
                self.dirty = True
                ad = self.devices[device_id] = self._new()  # type: ignore[index]
                self.journal.append(["d", device_id, ad])
            return ad
        au = self.users.get(user_id)
        if au is None:
            self.dirty = True
            au = ad if ad is not None and ad not in self.owned else self._new()
            self.users[user_id] = au
            self.owned.add(au)
            self.journal.append(["u", user_id, au])
        elif au in self.merged:
            au = self.canonical(au)
        if device_id:
            if ad is None:
                self.dirty = True
                self.devices[device_id] = au
                self.journal.append(["d", device_id, au])
            elif ad != au and ad not in self.owned:
                self._merge(ad, au)
        return au

    def _merge(self, source: int, target: int) -> None:
        self.dirty = True
        self.merged[source] = target
        self.journal.append(["m", source, target])
        self._move_props(source, target)

    def _move_props(self, source: int, target: int) -> None:
        moved = self.user_props.pop(source, None)
        if moved:
            # The user's own values win over what the anonymous device carried.
            self.user_props[target] = {**moved, **self.user_props.get(target, {})}

    def lookup_user(self, user_id: str) -> int | None:
        aid = self.users.get(user_id)
        return None if aid is None else self.canonical(aid)

    def known_amplitude_id(self, aid: int) -> bool:
        return aid in self.owned or aid in self.merged or aid in self.user_props or (
            FIRST_AMPLITUDE_ID <= aid < self.next_id
        )

    def owners(self) -> dict[int, str]:
        """canonical amplitude_id -> (first) user_id of that person."""
        out: dict[int, str] = {}
        for user_id, aid in self.users.items():
            out.setdefault(self.canonical(aid), user_id)
        return out

    def forget(self, aids: set[int]) -> None:
        """Drop every mapping to these people: their next event makes a new user."""
        self.dirty = True
        self.users = {u: a for u, a in self.users.items() if self.canonical(a) not in aids}
        self.devices = {d: a for d, a in self.devices.items() if self.canonical(a) not in aids}
        for aid in aids:
            self.user_props.pop(aid, None)

    def replay(self, entries: list[list[Any]]) -> None:
        """Re-apply journal entries (idempotent: some may already be in the snapshot)."""
        for kind, key, aid in entries:
            if kind == "u":
                self.users[key] = aid
                self.owned.add(aid)
            elif kind == "d":
                self.devices[key] = aid
            elif kind == "m":
                self.merged[key] = aid
                self._move_props(key, aid)
            elif kind == "p":  # ``aid`` is that person's properties
                self.user_props[key] = aid
                continue
            elif kind == "f":  # a deletion: ``key`` lists the erased people
                self.forget({int(a) for a in key})
                continue
            else:  # the server's entries
                continue
            self.next_id = max(self.next_id, int(aid) + 1, int(key) + 1 if kind == "m" else 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "next_id": self.next_id,
            "users": self.users,
            "devices": self.devices,
            "merged": [[s, t] for s, t in self.merged.items()],
            "owned": list(self.owned),
            "user_props": [[aid, props] for aid, props in self.user_props.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Identities:
        ids = cls()
        ids.next_id = int(data.get("next_id", FIRST_AMPLITUDE_ID))
        ids.users = dict(data.get("users", {}))
        ids.devices = dict(data.get("devices", {}))
        ids.merged = {int(s): int(t) for s, t in data.get("merged", [])}
        ids.owned = set(data.get("owned", []))
        ids.user_props = {int(aid): props for aid, props in data.get("user_props", [])}
        return ids
