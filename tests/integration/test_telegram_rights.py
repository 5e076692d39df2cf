"""A group that does not let the bot send some kinds of media, on both stores: what Telegram refused
("not enough rights to send photos") is remembered for the chat, so the next delivery goes straight
to the form that works — no refused call — and a send of that kind that works again (an admin
allowed it, a 📥 press) forgets it."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.telegram_api import telegram_env
from tests.integration.test_telegram_hostile import jpeg, photos_by_caption, results, settled


async def test_a_second_delivery_into_a_chat_that_forbids_photos_makes_no_refused_call(
        db_url: str, tmp_path: Path) -> None:
    group = -8181
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        fake.restrict(group, "photos")
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg()))
        await fake.wait_for(lambda: results(env, group), timeout=60)
        await settled(env)
        first = len(fake.calls)
        assert [c for c in fake.calls if c.status == 400 and c.params.get("chat_id") == group]
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg(color="navy")))
        await fake.wait_for(lambda: len(results(env, group)) == 2, timeout=60)
        await settled(env, results=2)
        later = fake.calls[first:]
        assert not [(c.method, c.status) for c in later if c.status != 200], [(c.method, c.status) for c in later]
        assert photos_by_caption(fake, group) == {"bright": 2, "dark": 2, "sheet": 2}
        assert "the bot may not send photos in this chat" in results(env, group)[1]["text"]
        # an admin allows photos; the remembered refusal still sends files as documents until it
        # runs out or a photo goes through: a press of nothing changes that, a new day does
        await env.app.store.tx(lambda tx: tx.q(
            "UPDATE kv SET expires_at = expires_at - :d WHERE namespace = 'telegram.rights'", {"d": 2 * 86400.0}))
        fake.restrict(group)
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg(color="olive")))
        await fake.wait_for(lambda: len(results(env, group)) == 3, timeout=60)
        await settled(env, results=3)
        assert len(fake.calls_of("sendMediaGroup")) == 1
