//! The fold of the entries that bring keys in or move them: a robot's `Join` with a join
//! token, and the rotations (`RotateMember`, `RotateRoot`; see `rotation`).

use crate::entry::{Entry, Join};
use crate::ids::{EntryHash, MemberKey};
use crate::invite::verify_join_proof;
use crate::rotation::{RotationProof, verify_root_possession};
use crate::sig::Sig;
use crate::state::{FleetState, Member, Refusal};

impl FleetState {
    pub(crate) fn apply_join(
        &mut self,
        hash: EntryHash,
        entry: &Entry,
        join: &Join,
    ) -> Result<(), Refusal> {
        debug_assert_ne!(hash, join.invite);
        self.not_revoked(&entry.author)?;
        if self.members.contains_key(&entry.author) {
            return Err(Refusal::AlreadyMember(entry.author));
        }
        let state = self
            .invites
            .get(&join.invite)
            .ok_or(Refusal::UnknownInvite(join.invite))?;
        if !verify_join_proof(
            &state.invite.invite_key,
            self.fleet,
            join.invite,
            &entry.author,
            &join.proof,
        ) {
            return Err(Refusal::BadJoinProof);
        }
        if entry.at > state.invite.expires_at {
            return Err(Refusal::InviteExpired {
                expired_at: state.invite.expires_at,
            });
        }
        if state.used >= state.invite.uses {
            return Err(Refusal::InviteUsedUp {
                uses: state.invite.uses,
            });
        }
        if let Some(prefix) = &state.invite.name_prefix
            && !join.name.starts_with(&format!("{prefix}-"))
        {
            return Err(Refusal::NamePrefix {
                name: join.name.clone(),
                prefix: prefix.clone(),
            });
        }
        self.check_name(&entry.author, &join.name)?;
        let groups = state.invite.groups.clone();
        if let Some(state) = self.invites.get_mut(&join.invite) {
            state.used += 1;
        }
        self.members.insert(
            entry.author,
            Member {
                key: entry.author,
                name: join.name.clone(),
                groups,
                since: entry.at,
            },
        );
        Ok(())
    }

    /// Moves `proof.old`'s membership and grant to `proof.new` (the author's authority is
    /// checked by the caller).
    pub(crate) fn apply_rotate_member(&mut self, proof: &RotationProof) -> Result<(), Refusal> {
        if !proof.verify() {
            return Err(Refusal::BadRotationProof);
        }
        self.not_revoked(&proof.old)?;
        if proof.old == self.root {
            return Err(Refusal::RootOnly);
        }
        if !self.members.contains_key(&proof.old) && !self.grants.contains_key(&proof.old) {
            return Err(Refusal::UnknownMember(proof.old));
        }
        self.fresh_key(&proof.new)?;
        if let Some(mut member) = self.members.remove(&proof.old) {
            member.key = proof.new;
            self.members.insert(proof.new, member);
        }
        if let Some(mut grant) = self.grants.remove(&proof.old) {
            grant.member = proof.new;
            self.grants.insert(proof.new, grant);
        }
        self.retired.insert(proof.old, proof.new);
        Ok(())
    }

    /// The root hands the fleet to `new`.
    pub(crate) fn apply_rotate_root(
        &mut self,
        author: &MemberKey,
        new: &MemberKey,
        possession: &Sig,
    ) -> Result<(), Refusal> {
        if *author != self.root {
            return Err(Refusal::RootOnly);
        }
        if !verify_root_possession(new, self.fleet, possession) {
            return Err(Refusal::BadRotationProof);
        }
        self.fresh_key(new)?;
        self.retired.insert(self.root, *new);
        self.root = *new;
        Ok(())
    }

    /// A key a rotation may move to: no member, grantee, root, revoked or retired key.
    fn fresh_key(&self, key: &MemberKey) -> Result<(), Refusal> {
        let used = *key == self.root
            || key.0 == self.fleet.0
            || self.members.contains_key(key)
            || self.grants.contains_key(key)
            || self.revoked.contains_key(key)
            || self.retired.contains_key(key);
        if used {
            return Err(Refusal::KeyInUse(*key));
        }
        Ok(())
    }
}
