//! One of two kinds of member behind one type, so that a platform can mix
//! them (module slots and remote tokens behind one virtual slot) without
//! boxing. `no_std`.

use p11ha_core::Result;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, SessionInfo, SlotInfo, TokenInfo,
};

/// A member of kind `A` or `B`.
pub enum Either<A, B> {
    /// The first kind.
    A(A),
    /// The second kind.
    B(B),
}

macro_rules! either {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                match self {
                    Either::A(m) => m.$name($($arg),*),
                    Either::B(m) => m.$name($($arg),*),
                }
            }
        )*
    };
}

impl<A: Member, B: Member> Member for Either<A, B> {
    fn slot_id(&self) -> u64 {
        match self {
            Either::A(m) => m.slot_id(),
            Either::B(m) => m.slot_id(),
        }
    }

    p11ha_core::member_calls!(either);

    fn reconnect(&self) -> Result<()> {
        match self {
            Either::A(m) => m.reconnect(),
            Either::B(m) => m.reconnect(),
        }
    }
}
