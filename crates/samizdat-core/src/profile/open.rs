//! Creating, opening and assembling a profile: the database, the keys, the relays.

use super::*;

/// The parts of a profile that come from (or go into) its database, for `Profile::assemble`.
pub(super) struct Stored<'a> {
    home: &'a Path,
    db: Db,
    mls: Mls,
    name: String,
    fingerprint: [u8; 32],
    mailbox: Id,
    mailbox_key: MailboxKey,
    relay: RelayClient,
    others: Vec<relays::OwnMailbox>,
    net: crate::net::Net,
    isolation_salt: Vec<u8>,
}

pub(super) fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

impl Profile {
    /// Path of the profile database inside `home`.
    pub fn db_path(home: &Path) -> PathBuf {
        home.join(DB_FILE)
    }

    pub fn exists(home: &Path) -> bool {
        Self::db_path(home).exists()
    }

    /// Create a profile: keys, encrypted store, a mailbox and a KeyPackage pool on `relay`.
    pub async fn init(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
    ) -> Result<Profile> {
        let net = crate::net::Net::from_env()?.unwrap_or_default();
        Self::init_with(home, passphrase, relay_url, name, net).await
    }

    /// [`Profile::init_with`] on several independent relays: a mailbox on each (the first
    /// is the primary). Nothing is left behind when one of them fails.
    pub async fn init_relays(
        home: &Path,
        passphrase: &str,
        relays: &[String],
        name: &str,
        net: crate::net::Net,
    ) -> Result<Profile> {
        let Some((first, rest)) = relays.split_first() else {
            return Err(Error::Usage("give at least one --relay".into()));
        };
        let mut profile = Self::init_with(home, passphrase, first, name, net).await?;
        for r in rest {
            if let Err(e) = profile.add_relay(r).await {
                drop(profile);
                remove_db_files(&Self::db_path(home));
                return Err(e);
            }
        }
        Ok(profile)
    }

    /// [`Profile::init`] with a proxy (kept in the profile for every later connection).
    pub async fn init_with(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
        net: crate::net::Net,
    ) -> Result<Profile> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Usage(
                "the display name must be 1 to 64 printable characters".into(),
            ));
        }
        Self::create(home, passphrase, relay_url, name, net, true).await
    }

    /// A profile for a device about to be linked (`device join`): keys and a mailbox, no
    /// KeyPackages yet (they need the certificate the other device signs).
    pub(crate) async fn init_device(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
        net: crate::net::Net,
    ) -> Result<Profile> {
        Self::create(home, passphrase, relay_url, name, net, false).await
    }

    /// A new profile in `home` (nothing is left behind when it fails).
    pub(super) async fn create(
        home: &Path,
        passphrase: &str,
        relay_url: &str,
        name: &str,
        net: crate::net::Net,
        key_packages: bool,
    ) -> Result<Profile> {
        crate::store::check_new_passphrase(passphrase)?;
        net.check()?;
        let isolation_salt = crate::random_id().as_bytes().to_vec();
        let relay = RelayClient::with_net(
            relay_url,
            &net,
            isolation_identity(&net, &isolation_salt, b"mailbox").as_deref(),
        )?;
        let path = Self::db_path(home);
        if path.exists() {
            return Err(Error::Usage(format!(
                "a profile already exists in {}",
                home.display()
            )));
        }
        crate::create_private_dir(home)?;
        relay.health().await?;
        let result = Self::init_inner(
            home,
            &path,
            passphrase,
            relay,
            name,
            net,
            isolation_salt,
            key_packages,
        )
        .await;
        if result.is_err() {
            remove_db_files(&path);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn init_inner(
        home: &Path,
        path: &Path,
        passphrase: &str,
        relay: RelayClient,
        name: &str,
        net: crate::net::Net,
        isolation_salt: Vec<u8>,
        key_packages: bool,
    ) -> Result<Profile> {
        let db = Db::open(path, passphrase)?;
        db.set_setting(Setting::IsolationSalt, &isolation_salt)?;
        store_net(&db, &net)?;
        // Random bytes until a duress passphrase is set (then indistinguishable from them).
        crate::wipe::init_duress(home)?;
        Self::manage_duress(&db)?;
        let signer = mls::generate_signer(mls::DEFAULT_CIPHERSUITE)?;
        let (mailbox_key, pkcs8) = MailboxKey::generate()?;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let mailbox = random_id();
        // Our own name as others will see it: nothing invisible (review 3, L11). The
        // `RAW_NAME` fault point keeps it as given, as a hostile client would.
        let name = if crate::fault::on("RAW_NAME") {
            name.to_string()
        } else {
            crate::text::clean_name(name)
        };
        if name.is_empty() {
            return Err(Error::Usage("the display name must not be empty".into()));
        }
        db.set_setting(Setting::Name, name.as_bytes())?;
        db.set_setting(Setting::Relay, relay.base().as_bytes())?;
        db.set_setting(Setting::MlsSecret, &signer.secret)?;
        db.set_setting(Setting::MlsPublic, &signer.public)?;
        db.set_setting(
            Setting::Ciphersuite,
            &u16::from(mls::DEFAULT_CIPHERSUITE).to_be_bytes(),
        )?;
        db.set_setting(Setting::MailboxId, mailbox.as_bytes())?;
        db.set_setting(Setting::MailboxKey, &pkcs8)?;
        relay
            .create_mailbox(random_id(), mailbox, mailbox_key.public())
            .await?;
        let mls = Mls::new(
            db.clone(),
            &signer.secret,
            &signer.public,
            mls::DEFAULT_CIPHERSUITE,
            None,
        )?;
        let mut profile = Profile::assemble(Stored {
            home,
            fingerprint: mls::fingerprint(&signer.public),
            db,
            mls,
            name: name.to_string(),
            mailbox,
            mailbox_key,
            relay,
            others: Vec::new(),
            net,
            isolation_salt,
        });
        profile.db.conn().execute(
            "INSERT INTO mailboxes (relay, mailbox_id, mailbox_key, position, created_at) VALUES (?1, ?2, ?3, 0, ?4)",
            params![profile.relay.base(), mailbox.as_bytes(), &pkcs8[..], now_secs() as i64],
        )?;
        if !key_packages {
            return Ok(profile);
        }
        let last_resort = profile.mls.key_package(true)?;
        profile
            .upload_key_packages(KEY_PACKAGE_POOL, Some(last_resort))
            .await?;
        profile
            .db
            .set_setting(Setting::LastResortAt, &now_secs().to_be_bytes())?;
        Ok(profile)
    }

    /// A profile from what its database holds; the in-memory state starts empty.
    pub(super) fn assemble(s: Stored<'_>) -> Profile {
        let down_since = Self::load_down(&s.db);
        Profile {
            home: s.home.to_path_buf(),
            db: s.db,
            mls: s.mls,
            name: s.name,
            fingerprint: s.fingerprint,
            mailbox: s.mailbox,
            mailbox_key: std::sync::Arc::new(s.mailbox_key),
            relay: s.relay,
            others: s.others,
            down_since,
            move_failed: HashMap::new(),
            live_logs: HashSet::new(),
            poll_only: false,
            mailbox_live: false,
            receipts_due: std::sync::atomic::AtomicBool::new(true),
            call_tunnels: Default::default(),
            relays: Default::default(),
            ws_appends: false,
            wipe_on_stop: None,
            kp_checked_at: 0,
            others_checked_at: 0,
            net: s.net,
            isolation_salt: s.isolation_salt,
        }
    }

    /// Open a profile; with the duress passphrase, wipe it silently and return a fresh,
    /// empty profile with the same display name on the same relay (see `wipe.rs`). The caller
    /// holds the profile lock.
    pub async fn open_or_duress(home: &Path, passphrase: &str) -> Result<Profile> {
        match Profile::open(home, passphrase) {
            Err(Error::WrongPassphrase) => match crate::wipe::check_duress(home, passphrase)? {
                Some(fresh) => {
                    crate::wipe::wipe_keeping_lock(home)?;
                    let net = match &fresh.proxy {
                        Some(url) => crate::net::Net {
                            proxy: Some(crate::net::Proxy::parse(url)?),
                            isolate: fresh.isolate,
                        },
                        None => crate::net::Net::from_env()?.unwrap_or_default(),
                    };
                    Profile::init_with(home, passphrase, &fresh.relay, &fresh.name, net).await
                }
                None => Err(Error::WrongPassphrase),
            },
            other => other,
        }
    }

    /// Open an existing profile.
    pub fn open(home: &Path, passphrase: &str) -> Result<Profile> {
        let path = Self::db_path(home);
        if !path.exists() {
            return Err(Error::NotFound(format!("no profile in {}", home.display())));
        }
        let db = Db::open(&path, passphrase)?;
        let secret = zeroize::Zeroizing::new(db.setting(Setting::MlsSecret)?);
        let public = db.setting(Setting::MlsPublic)?;
        let cs_bytes = db.setting(Setting::Ciphersuite)?;
        let cs = u16::from_be_bytes(
            <[u8; 2]>::try_from(cs_bytes.as_slice())
                .map_err(|_| Error::Storage("corrupt ciphersuite".into()))?,
        );
        // A linked device carries its certificate; the first device is the identity.
        let cert = db.get_setting(Setting::DeviceCert)?;
        let mls = Mls::new(db.clone(), &secret, &public, cs.into(), cert.as_deref())?;
        let person = match &cert {
            Some(c) => crate::device::DeviceCert::decode(c)
                .ok_or_else(|| Error::Storage("corrupt device certificate".into()))??
                .person(),
            None => mls::fingerprint(&public),
        };
        let mailbox = Id::from_slice(&db.setting(Setting::MailboxId)?)
            .map_err(|_| Error::Storage("corrupt mailbox id".into()))?;
        let mailbox_key =
            MailboxKey::from_pkcs8(&zeroize::Zeroizing::new(db.setting(Setting::MailboxKey)?))?;
        let isolation_salt = match db.setting(Setting::IsolationSalt) {
            Ok(s) if !s.is_empty() => s,
            _ => {
                let s = crate::random_id().as_bytes().to_vec();
                db.set_setting(Setting::IsolationSalt, &s)?;
                s
            }
        };
        let net = match crate::net::Net::from_env()? {
            Some(n) => n,
            None => stored_net(&db)?,
        };
        let relay = RelayClient::with_net(
            &db.setting_string(Setting::Relay)?,
            &net,
            isolation_identity(&net, &isolation_salt, b"mailbox").as_deref(),
        )?;
        let others = Self::load_mailboxes(&db, &net, &isolation_salt, relay.base(), &mailbox)?;
        let profile = Profile::assemble(Stored {
            others,
            home,
            name: db.setting_string(Setting::Name)?,
            fingerprint: person,
            db,
            mls,
            mailbox,
            mailbox_key,
            relay,
            net,
            isolation_salt,
        });
        // Routine: the duress file changes at every unlock (see `duress.rs`). A failure
        // does not keep the person out of their profile.
        if let Err(e) = profile.refresh_duress() {
            tracing::warn!("cannot rewrite the duress file: {e}");
        }
        Ok(profile)
    }
}
