"""The notification outbox: channels and the dispatcher that delivers pending notifications."""

from toolweave.notify.dispatcher import Channel, DeliveryError, Notifier

__all__ = ["Channel", "DeliveryError", "Notifier"]
