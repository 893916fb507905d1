"""The ledger's errors: each message says what went wrong and what to do about it."""

from __future__ import annotations


from bitswarm.errors import BitswarmError


class LedgerError(BitswarmError):
    """Something about the chain or a transaction that the caller should read."""


class ConnectionFailed(LedgerError):
    """The JSON-RPC endpoint did not answer."""


class DeploymentError(LedgerError):
    """No usable deployment: the message says where it looked and what to run."""


class InsufficientFunds(LedgerError):
    """An account holds too little ETH for the gas of what it was asked to do; says how much and where to get it."""


class RevertError(LedgerError):
    """A call or transaction the contract refused; `reason` is the contract's revert string."""

    def __init__(self, action: str, reason: str):
        super().__init__(f"{action} reverted: {reason}")
        self.action = action
        self.reason = reason
