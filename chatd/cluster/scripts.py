"""The cluster's Redis Lua scripts, read from ``chatd/cluster/lua/`` at import.

The ``.lua`` files ship in the package (setup.cfg ``package_data``). A script
is one or more files joined in order: helpers first (``bus.lua``, the Lua half
of :mod:`chatd.cluster.codec`; ``reap.lua``; ``items.lua`` and ``rows.lua``, the Lua half of
:mod:`chatd.store.redis`), then the script's body. Each file
documents its KEYS, ARGV and result.
"""

from __future__ import annotations

from importlib.resources import files

_LUA = files("chatd.cluster") / "lua"

#: script name -> the files it is made of, in order
PARTS = {
    # presence (chatd.cluster.presence.RedisDirectory)
    "connect": ("connect",),
    "disconnect": ("disconnect",),
    "membership": ("membership",),
    "heartbeat": ("bus", "reap", "heartbeat"),
    "reap_self": ("bus", "reap", "reap_self"),
    "resync": ("bus", "resync"),
    # presence under Redis Cluster (chatd.cluster.presence.RedisClusterDirectory)
    "connect_user": ("connect_user",),
    "disconnect_user": ("disconnect_user",),
    # history (chatd.store.redis.RedisStore)
    "append": ("bus", "items", "rows", "append"),
    "replay": ("items", "replay"),
    "history": ("items", "history"),
    "fetch": ("items", "fetch"),
    "prune": ("items", "prune"),
    # conversations (chatd.store.redis.RedisStore, IConversationStore)
    "conversations": ("conversations",),
    "conversation": ("conversation",),
    "claim": ("claim",),
    "summaries": ("items", "summaries"),
    "mark_read": ("rows", "mark_read"),
    "set_muted": ("rows", "set_muted"),
    "readers": ("readers",),
    "members": ("members",),
    "cursor": ("cursor",),
    "user": ("user",),
    # offline push (chatd.store.redis.RedisStore, IPushStore)
    "push_subscribe": ("push_subscribe",),
    "push_claim": ("push_claim",),
    # moderation (chatd.store.redis.RedisStore, IModerationStore)
    "mod_entry": ("mod_entry",),
    "mod_close": ("mod_close",),
    "mod_rate": ("mod_rate",),
    # media metadata (chatd.media.redismeta.RedisMeta)
    "media": ("media",),
}


def _source(name: str) -> str:
    return "\n".join((_LUA / f"{part}.lua").read_text(encoding="utf-8") for part in PARTS[name])


#: script name -> Lua source
SOURCES = {name: _source(name) for name in PARTS}
