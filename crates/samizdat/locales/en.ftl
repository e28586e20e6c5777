# Samizdat app — English. Every key here must exist in ru.ftl too (a test checks).
app-title = Samizdat
nav-chats = Chats
nav-new-contact = New contact
nav-new-group = New group
nav-settings = Settings
skip-to-content = Skip to content
back = Back

banner-down = The relay cannot be reached. What you write is kept and sent when it is back.
banner-retrying = Reconnecting to the relay…
banner-stopped = Samizdat has stopped on this computer, so nothing is sent or received. Start it again (samizdat app): this page reconnects by itself and asks only for your passphrase.

login-title = Open Samizdat from its link
login-body = This page opens only from the link that “samizdat app” printed in your terminal. Run it again to get a new link.

onboard-title = Create your profile
onboard-intro = No phone number and no account: your profile lives on this computer, encrypted with your passphrase.
field-display-name = Display name
field-display-name-hint = What your contacts see. You can use any name.
field-relay = Relay address
field-relay-hint = The server that carries your encrypted messages. It cannot read them. Anyone can run one.
field-passphrase = Passphrase
field-passphrase-again = Passphrase again
field-passphrase-hint = At least 8 characters. Several unrelated words are easy to remember and hard to guess.
strength-weak = Weak: easy to guess
strength-fair = Fair: longer is better
strength-strong = Strong
onboard-submit = Create profile
err-passphrase-mismatch = The two passphrases differ.
err-passphrase-short = The passphrase must have at least 8 characters.

unlock-title = Unlock Samizdat
unlock-intro = Enter the passphrase of your profile.
unlock-submit = Unlock
err-wrong-passphrase = Wrong passphrase. Try again.

chats-title = Chats
chats-empty = No conversations yet. Create an invite or accept one to start.
chat-unread = { $count ->
    [one] { $count } unread message
   *[other] { $count } unread messages
}
chats-pick = Choose a conversation on the left.
chat-no-messages = No messages yet
chat-you = You
chat-members = { $count ->
    [one] { $count } member
   *[other] { $count } members
}
kind-direct = Chat
kind-group = Group

invitations-title = Invitations
invitation-from = A group with { $members } members, from ~{ $from } (not a contact)
invitation-relay = Hosted on relay { $relay }
invitation-relay-unknown = You have never used this relay: accepting connects to it.
invitation-accept = Join
invitation-decline = Decline

chat-older = Load older messages
chat-placeholder = Write a message
chat-composer-hint = Enter sends, Shift+Enter starts a new line
chat-send = Send
chat-info = Members and safety numbers
chat-inactive = You can no longer send here: { $status }
msg-queued = Waiting to be sent
msg-delivered = Delivered
msg-failed = Not delivered: { $reason }
msg-sent = Sent
msg-read = Read
msg-delivered-count = Delivered to { $count } of { $of }
msg-read-count = Read by { $count } of { $of }
receipts-title = Receipts
receipts-help = Your messages show “Delivered” once a device of the other person has them (in 1:1 chats and groups of up to 20). Read receipts also tell people when you have seen their messages; with them off you do not see theirs either.
receipts-read = Send and show read receipts
msg-photo = Photo: { $name }
msg-photo-open = Open the photo
msg-voice = Voice message, { $duration }
voice-record = Record a voice message
voice-stop = Stop and send
voice-cancel = Cancel
voice-recording = Recording…
voice-denied = The microphone is not available to this page.
block-title = Block
block-help = Nothing { $name } sends will be kept here, and you cannot write to them. They are not told.
block = Block { $name }
block-off-title = Blocked
block-off-help = You blocked { $name }: what they send is not kept, and you cannot write to them.
block-off = Unblock { $name }
chat-blocked = You blocked { $name }.
delete-chat-title = Delete this chat
delete-chat-help-group = You leave the group (the others see it), and its messages and files are deleted from this device.
delete-chat-help-direct = Its messages and files are deleted from this device, and it leaves your list until they write again. Your contact stays.
delete-chat-confirm = I understand: delete the messages on this device
delete-chat = Delete chat
qr-invite = QR code of the invite link shown above
qr-device = QR code of the device link, the same as the text below
qr-safety = QR code of the safety number shown above
saved-messages = Saved messages
kind-saved = Notes to self
msg-retry = Send again
msg-forwarded = Forwarded
msg-quote-missing = The original message is not available
msg-deleted = This message was deleted
msg-unsupported = This message needs a newer version of Samizdat: update Samizdat to see this
msg-edited = edited
msg-menu = Message actions
msg-reply = Reply
msg-react = React
msg-react-with = React with { $emoji }
msg-forward = Forward
msg-edit = Edit the text
msg-edit-save = Save
msg-delete-me = Delete for me
msg-delete-all = Delete for everyone
chat-replying-to = Replying to
chat-reply-cancel = Cancel reply
forward-title = Forward a message
forward-to = Send it to
forward-send = Forward

new-contact-title = New contact
invite-create-title = Invite someone
invite-create-help = Whoever has the link can start a conversation with you. Share it over a channel you trust.
invite-reusable = Reusable: several people can use it
invite-expiry = Valid for
expiry-1h = 1 hour
expiry-24h = 1 day
expiry-72h = 3 days
expiry-168h = 1 week
invite-create = Create invite
invite-link-title = Your invite link
invite-link-help = Send this link or let them scan the code. It expires { $when }.
invite-single = It works once.
invite-multi = Several people can use it.
copy = Copy
copied = Copied
accept-title = Accept an invite
field-invite-link = Invite link
field-contact-name = Name for this contact
accept-submit = Accept invite

group-new-title = New group
field-group-name = Group name
group-pick-members = Members
group-no-contacts = You have no contacts yet: add people first, then make a group.
group-create = Create group

info-title = Members
member-not-joined = has not joined yet
member-verified = verified
member-remove = Remove
member-verify = Safety number
group-add-title = Add members
group-add-submit = Add
group-add-none = Every contact is already in this group.
group-added-waiting = Will be added when their relay can be reached: { $names }
group-rename-title = Rename the group
group-rename-submit = Rename
group-leave-title = Leave the group
group-leave-help = You will no longer receive its messages.
group-leave = Leave group

timer-title = Disappearing messages
timer-help = Messages sent from now on are deleted on every member's device after this time.
timer-off = Off
timer-5m = 5 minutes
timer-1h = 1 hour
timer-1d = 1 day
timer-1w = 1 week
timer-secs = { $secs } seconds
timer-save = Set
chat-timer-on = Disappearing messages: { $duration }

verify-title = Safety number with { $name }
verify-help = Compare these digits with { $name } in person or on a call you trust. If they match, nobody stands between you.
verify-mark = Mark as verified
verify-unmark = Remove verification
verify-verified = You have verified { $name }.
verify-not-verified = Not verified yet.

settings-title = Settings
settings-language = Language
lang-auto = Automatic (from the browser)
# This language by its own name (the language switcher), and its decimal separator.
language-name = English
decimal-separator = .
settings-save = Save
settings-profile = Your profile
settings-name = Name
settings-relay = Relay
settings-fingerprint = Key fingerprint

settings-devices-title = Devices
settings-devices-help = Your other phones and computers, each a member of every conversation under your identity. Contacts see one person; your safety numbers do not change.
settings-devices-first = First device
settings-devices-this = this device
settings-devices-revoked = revoked
settings-devices-revoke = Revoke
settings-devices-revoked-done = Device revoked: removed from every conversation.

settings-duress-title = Duress passphrase
settings-duress-help = If someone forces you to unlock Samizdat, give them this passphrase instead: it silently deletes this profile and opens an empty one with the same name.
field-duress = Duress passphrase
field-duress-again = Duress passphrase again
settings-duress-submit = Set duress passphrase
settings-duress-done = Duress passphrase set.
err-duress-same = The duress passphrase must differ from your passphrase.
settings-wipe-title = Wipe this profile
settings-wipe-help = Deletes every conversation, contact and key on this computer at once. This cannot be undone.
settings-wipe-confirm = I understand: delete everything now
settings-wipe-submit = Wipe now
err-wipe-confirm = Tick the box to confirm.

error-title = Something went wrong
err-relay-unreachable = The relay cannot be reached. Try again when it is back.
err-not-found = Not found: it may have been removed.
err-invalid-invite = This invite link is not valid: { $message }
err-usage = { $message }
err-other = Error: { $message }

## Attachments
msg-file-save = Save
chat-attach = File
chat-attach-caption = Caption (optional)
chat-attach-send = Send file
file-too-large = The file is larger than 100 MB and cannot be sent.
size-bytes = { $n } bytes
size-kb = { $n } KB
size-mb = { $n } MB

## Proxy
settings-proxy-title = Proxy and Tor
settings-proxy-help = Send every connection through a proxy when the relay is blocked or your address must stay hidden. Enter socks5h://host:port (names resolved by the proxy), socks5:// or http://, or “tor” for Tor on this computer; leave empty for direct connections. Applies the next time the app starts.
settings-proxy-now = Now: { $proxy }
settings-proxy-none = Now: direct connections, no proxy.
settings-proxy-isolated = each conversation separately
settings-proxy-field = Proxy address
settings-proxy-isolate = Separate connections for each conversation (always on with Tor)
settings-proxy-done = Saved. Restart the app to connect this way.

# Lock, quit (security review 3, H3)
verify-page-title = Safety number
stopped-title = Samizdat has stopped
stopped-intro = The app is closed and this browser holds nothing of it. Run samizdat app to open it again.
lock-button = Lock
quit-button = Quit
lock-intro = Lock closes the profile (its keys leave memory) until the passphrase is entered again; Quit also stops the app.
settings-session-title = Lock and quit

# Linking a device: the new device shows the link (security review 3, H1)
settings-devices-add-label = Link shown by the new device
settings-devices-add-help = On the new device choose “Link to a profile I already have” in the app, or run samizdat device join --name NAME, and paste the link it shows here. Links work once, for 2 minutes.
settings-devices-add = Add a device
settings-devices-confirm = Add “{ $name }” as your device?
settings-devices-confirm-code = Its screen must show the same code:
settings-devices-confirm-help = It will read every conversation and its history, and write as you. Add it only if it is your device and the codes match.
settings-devices-confirm-yes = Yes, add this device
settings-devices-confirm-no = Cancel
settings-devices-adding = Adding “{ $name }”: it appears in the list when it has joined every conversation.
onboard-link-help = Already use Samizdat on another device? Link this one to that profile instead (the name above then names this device).
onboard-link = Link to a profile I already have
linking-title = Link this device
linking-intro = On the device that holds your profile open Settings → Devices → Add a device, and scan or paste this link. It works once, for 2 minutes.
linking-code = The other device must show this code:
linking-text = The link as text
linking-waiting = Waiting for the other device…
linking-preparing = Preparing the link…
linking-again = Start again

# What the core reports, as data (samizdat_core::notice): notice-<kind>, problem-<error kind>,
# refusal-<code>, status-<code>. The CLI prints these English sentences too; an error's
# technical detail stands in for { $error } there.
problem-wrong-passphrase = wrong passphrase
problem-usage = the request was not valid
problem-not-found = not found
problem-not-member = not a member
problem-invalid-invite = the invite is not valid
problem-key-package-mismatch = the relay handed out a key that is not the inviter's
problem-relay-unreachable = the relay cannot be reached
problem-relay = the relay refused
problem-busy = busy; try again
problem-protocol = a message did not follow the protocol
problem-mls = the group's encryption refused it
problem-crypto = a cryptographic check failed
problem-integrity = the data failed its integrity check
problem-storage = local storage failed
problem-stopped = the service has stopped
refusal-unknown-invite = an introduction used an invite this profile never made
refusal-expired-invite = an introduction used an expired invite
refusal-reused-invite = an introduction reused a single-use invite
status-left = you left
status-removed = removed from the group
status-lost-sync = lost sync with the group; ask a member to re-add you
status-refusing = refusing: { $reason }
status-refused = refused: { $reason }
status-invite-refused = the invite was refused ({ $reason }); ask for a new link
notice-relay-error = relay: { $code }: { $detail }
notice-relay-frame-unreadable = relay sent an unreadable frame
notice-relay-unreachable = { $error }; reading your other relays
notice-move-failed = could not move to { $relay }: { $error }
notice-log-recreated = re-created this conversation's log on relay { $relay }; the other members follow
notice-moved-by-us = moved this conversation to relay { $relay } (from { $from }); the other members follow
notice-moved-by-member = a member moved this conversation to relay { $relay } (from { $from })
notice-moved-chosen = this conversation moved to relay { $relay } (chosen over { $over } by the move rule)
notice-move-not-followed = could not follow a conversation's move: { $error }
notice-move-not-told = { $who } could not be told that this conversation moved ({ $error }); they follow when they find its relay down
notice-announce-failed = could not announce ourselves: { $error }
notice-locked-log-not-recreated = could not re-create a locked log: { $error }
notice-sync-failed = sync failed: { $error }
notice-lost-sync-token = lost sync with the group (its epoch token no longer matches: a fork or tampering); ask a member to re-add you
notice-lost-sync-false-token = lost sync with the group: the commit by { $who } at position { $position } does not lead to the token the relay recorded — either { $who } gave the relay a false token (locking everyone else out), or the relay served a commit it never accepted (a fork); recovering: re-creating the log on the same relay (the others follow) and removing { $who } — unless the others do not see this (then the relay forked you: ask to be re-added)
notice-lost-sync-forked-commit = lost sync with the group: the commit at position { $position } does not lead to the token the relay recorded (the relay served a commit it never accepted, or our own commit was lost); re-create the log (`samizdat move { $conversation } --to RELAY`) or ask to be re-added
notice-entries-expired = entries are missing from the relay (expired?); ask a member to re-add you
notice-entries-missing = entries { $from }..{ $to } of the log are missing (withheld by the relay, or expired)
notice-entry-rejected = rejected entry { $position } of the log: { $error }
notice-undecodable-message = ignored an undecodable message at position { $position }
notice-mailbox-message-unreadable = dropped an unreadable mailbox message
notice-queued-update-refused = a queued update was refused by the relay: { $error }
notice-attachment-refused = an attachment was refused: { $error }
notice-join-failed = could not join a conversation: { $error }
notice-invitation-relay-changed = the relay address of an invitation was changed on the way; the one its sender signed is used
notice-add-pending = { $name } is not in this conversation yet ({ $error }); it completes by itself when the relay can be reached
notice-add-failed = could not add { $name } to the group: { $error }
notice-connect-failed = could not connect to { $name }: { $error }; ask them for a new invite
notice-invitation-resent = { $name } had not joined; sent them a fresh invitation
notice-invitation-resend-failed = { $name } has not joined, and a fresh invitation failed: { $error }
notice-welcome-not-delivered = { $who } could not be sent their invitation to this group ({ $error }); remove and add them again, or ask them for their current relay
notice-leaver-not-removed = could not remove a member who left: { $error }; will retry
notice-left-on-other-device = you left this group on your other device
notice-introduction-refused = refused: { $reason }; the other side is told and the conversation removed
notice-invite-refused-by = { $name } refused the invite ({ $reason }); ask them for a new link
notice-they-could-not-read = They could not read a message you sent: it was changed on the way (by the relay or someone between) and refused. A call you were making then could not connect.
notice-let-in-by-hand = You let them in yourself, although { $reason }. If you did not give them that link, someone else has seen it.
notice-contact-device-added = { $who } linked a new device
notice-contact-device-removed = { $who } removed a device; it no longer speaks for them
notice-device-list-unsigned = ignored a device list that its sender's identity did not sign
notice-device-list-not-sent = could not send the device list: { $error }
notice-revoked-device-changed-group = { $added ->
    [0] a device that { $who } removed changed this group; it is being removed
   *[other] a device that { $who } removed changed this group; it and the { $added } member(s) it added are being removed
}
notice-ignored-revoked-device = ignored a message from a device { $who } removed
notice-link-failed = linking a device failed: { $error }
notice-link-message-unreadable = a device link received a message that does not open with its key (altered, or not for it); ignored
notice-device-linked = linked device “{ $name }”: added to { $conversations } conversations and sent the history
notice-new-device-not-added = could not add the new device to this conversation: { $error }
notice-own-devices-not-added = could not add your other devices: { $error }
notice-own-device-not-added = could not add your device “{ $name }” here: { $error }
notice-revoked-device-not-removed = could not remove a revoked device of yours here: { $error }
notice-history-sent = your other device sent the history
notice-history-received = history received from your other device: { $conversations } conversations, { $messages } messages
notice-history-unreadable = the history from your other device could not be read: { $error }
notice-other-devices-not-told = could not tell your other devices: { $error }
notice-invitation-accepted-elsewhere = joined “{ $name }”, accepted on your other device
notice-invitation-declined-elsewhere = an invitation was declined on your other device
notice-invitation-elsewhere-failed = an invitation accepted on your other device failed: { $error }
notice-claims-conversation = claims the id of your conversation “{ $name }” without continuing it: possibly a takeover attempt
notice-unknown-relay = hosted on relay { $relay }, which you have never used: accepting connects to it

arrange-title = In your list
arrange-pin = Pin to the top
arrange-unpin = Unpin
arrange-archive = Archive
arrange-unarchive = Bring back from the archive
arrange-mute = Mute notifications
arrange-save = Apply
mute-1h = for an hour
mute-8h = for 8 hours
mute-1w = for a week
mute-forever = until I unmute
mute-off = unmute now
muted-until = Muted:
mark-pinned = Pinned
mark-muted = Muted
chats-archived = Archived chats ({ $count })
search-label = Search messages on this device
search-title = Search
search-go = Search
search-count = { $count ->
    [one] One message found
   *[other] { $count } messages found
}
search-words = Type at least one word to search for.

line-member-added = { $who } joined the group
line-member-removed = { $who } was removed from the group
line-member-left = { $who } left the group
line-renamed = The group is now called { $name }
line-you-removed = You were removed from the group
line-timer = { $who } set disappearing messages to { $duration }
line-timer-you = You set disappearing messages to { $duration }
line-timer-off = { $who } turned disappearing messages off
line-timer-off-you = You turned disappearing messages off
call-voice = Voice call
call-video = Video call
call-group = Group call (up to four people)
call-incoming-group = Incoming group call
call-group-waiting = Waiting for the others to join…
call-in-the-call = In the call
call-incoming = Incoming call
call-incoming-video = Incoming video call
call-calling = Calling…
call-connecting = Connecting…
call-connected = Connected
call-ended = Call ended
call-failed = The call could not connect.
call-no-media = The browser gave no microphone or camera.
call-secure = Relayed · end-to-end encrypted
call-safety = Safety number
call-accept = Accept
call-decline = Decline
call-mute = Mute
call-unmute = Unmute
call-camera-off = Camera off
call-camera-on = Camera on
call-hangup = Hang up
call-mic = Microphone
call-cam = Camera
call-kind-group = Group call
call-kind-out-voice = Outgoing call
call-kind-out-video = Outgoing video call
call-kind-in-voice = Incoming call
call-kind-in-video = Incoming video call
line-call-answered = { $kind }, { $duration }
line-call-missed = Missed call
line-call-no-answer = { $kind }: no answer
line-call-declined = { $kind }: declined
line-call-busy = { $kind }: busy
line-call-cancelled = { $kind }: cancelled
line-call-answered-elsewhere = { $kind }: answered on another device
line-call-failed = { $kind }: could not connect

notify-title = Notifications
notify-help = While the app is open in this browser. What they show can be read by anyone who sees the screen, and by the browser and the system that display them.
notify-shows = A notification shows
notify-off = nothing: no notifications
notify-private = only that a message arrived
notify-sender = who wrote, not what
notify-sender-text = who wrote and what
notify-allow = Allow notifications in this browser
notify-denied = This browser blocks notifications from the app; allow them in its site settings.
notify-new-message = New message
contact-rename-title = What you call this contact

## Channels
nav-channels = Channels
channels-title = Channels
channels-none = You do not run or follow any channel yet.
channel-counts = Posts: { $posts } · unread: { $unread }
channel-admin = admin
channel-follow-title = Follow a channel
field-channel-link = Channel link
channel-follow = Follow
channel-create-title = New channel
field-channel-name = Name
field-channel-about = What it is about
channel-create = Create channel
channel-post-placeholder = Write a post
channel-post = Publish
channel-no-posts = No posts yet.
channel-pinned = Pinned
channel-edited = edited
channel-pin = Pin
channel-delete = Delete
channel-fault = The copy of this channel on { $relay } did not pass its check; it was read from another relay.
channel-link-title = Share the channel
channel-link-help = Whoever has this link can read the channel. No one, you included, can see who reads it.
channel-qr = QR code of the channel link
channel-mirror-title = Mirrors
channel-mirror-help = Copy the channel to another relay: readers switch to it if this one is blocked.
channel-read-from = Read from:
field-mirror-url = Relay address
channel-mirror-add = Add mirror
channel-leave = Leave channel
