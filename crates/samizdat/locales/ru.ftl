# Приложение Samizdat — русский. Каждый ключ должен быть и в en.ftl (это проверяет тест).
app-title = Samizdat
nav-chats = Чаты
nav-new-contact = Новый контакт
nav-new-group = Новая группа
nav-settings = Настройки
skip-to-content = Перейти к содержимому
back = Назад

banner-down = Нет связи с ретранслятором. Всё, что вы напишете, сохранится и уйдёт, когда связь вернётся.
banner-retrying = Переподключаемся к ретранслятору…
banner-stopped = Samizdat на этом компьютере остановлен: ничего не отправляется и не приходит. Запустите его снова (samizdat app) — страница подключится сама и спросит только пароль.

login-title = Откройте Samizdat по ссылке
login-body = Эта страница открывается только по ссылке, которую команда «samizdat app» вывела в терминал. Запустите её снова, чтобы получить новую ссылку.

onboard-title = Создайте профиль
onboard-intro = Ни номера телефона, ни учётной записи: профиль хранится на этом компьютере и зашифрован вашей парольной фразой.
field-display-name = Имя
field-display-name-hint = Его увидят ваши контакты. Можно выбрать любое.
field-relay = Адрес ретранслятора
field-relay-hint = Сервер, который передаёт ваши зашифрованные сообщения. Прочитать их он не может. Запустить такой сервер может кто угодно.
field-passphrase = Парольная фраза
field-passphrase-again = Парольная фраза ещё раз
field-passphrase-hint = Не меньше 8 символов. Несколько не связанных между собой слов легко запомнить и трудно подобрать.
strength-weak = Слабая: её легко подобрать
strength-fair = Средняя: длиннее — надёжнее
strength-strong = Надёжная
onboard-submit = Создать профиль
err-passphrase-mismatch = Парольные фразы не совпадают.
err-passphrase-short = Парольная фраза должна быть не короче 8 символов.

unlock-title = Разблокировать Samizdat
unlock-intro = Введите парольную фразу своего профиля.
unlock-submit = Разблокировать
err-wrong-passphrase = Неверная парольная фраза. Попробуйте ещё раз.

chats-title = Чаты
chats-empty = Переписок пока нет. Создайте приглашение или примите чужое, чтобы начать.
chat-unread = { $count ->
    [one] { $count } непрочитанное сообщение
    [few] { $count } непрочитанных сообщения
   *[many] { $count } непрочитанных сообщений
}
chats-pick = Выберите переписку слева.
chat-no-messages = Сообщений пока нет
chat-you = Вы
chat-members = { $count ->
    [one] { $count } участник
    [few] { $count } участника
   *[many] { $count } участников
}
kind-direct = Чат
kind-group = Группа

invitations-title = Приглашения
invitation-from = Группа из { $members } участников от ~{ $from } (нет в контактах)
invitation-relay = Размещена на ретрансляторе { $relay }
invitation-relay-unknown = Вы ещё не пользовались этим ретранслятором: если вступить, приложение к нему подключится.
invitation-accept = Вступить
invitation-decline = Отклонить

chat-older = Показать более ранние сообщения
chat-placeholder = Напишите сообщение
chat-composer-hint = Enter — отправить, Shift+Enter — новая строка
chat-send = Отправить
chat-info = Участники и коды безопасности
chat-inactive = Писать сюда больше нельзя: { $status }
msg-queued = Ожидает отправки
msg-delivered = Доставлено
msg-failed = Не доставлено: { $reason }
msg-sent = Отправлено
msg-read = Прочитано
msg-delivered-count = Доставлено { $count } из { $of }
msg-read-count = Прочитали { $count } из { $of }
receipts-title = Отчёты о доставке
receipts-help = Ваши сообщения помечаются «Доставлено», когда их получило устройство собеседника (в личных чатах и группах до 20 человек). Отчёты о прочтении сообщают людям, что вы видели их сообщения; если их выключить, вы не увидите и чужих.
receipts-read = Отправлять и показывать отчёты о прочтении
msg-photo = Фото: { $name }
msg-photo-open = Открыть фото
msg-voice = Голосовое сообщение, { $duration }
voice-record = Записать голосовое сообщение
voice-stop = Остановить и отправить
voice-cancel = Отмена
voice-recording = Идёт запись…
voice-denied = Микрофон недоступен этой странице.
block-title = Заблокировать
block-help = Ничего из того, что пришлёт { $name }, здесь не сохранится, и вы не сможете писать этому человеку. Он об этом не узнает.
block = Заблокировать: { $name }
block-off-title = Заблокирован
block-off-help = Вы заблокировали: { $name }. Присланное не сохраняется, писать нельзя.
block-off = Разблокировать: { $name }
chat-blocked = Вы заблокировали: { $name }.
delete-chat-title = Удалить этот чат
delete-chat-help-group = Вы выйдете из группы (остальные это увидят), а её сообщения и файлы будут удалены с этого устройства.
delete-chat-help-direct = Сообщения и файлы будут удалены с этого устройства, а чат пропадёт из списка, пока собеседник не напишет снова. Контакт останется.
delete-chat-confirm = Понимаю: удалить сообщения на этом устройстве
delete-chat = Удалить чат
qr-invite = QR-код ссылки-приглашения, показанной выше
qr-device = QR-код ссылки для устройства, той же, что в тексте ниже
qr-safety = QR-код кода безопасности, показанного выше
saved-messages = Избранное
kind-saved = Заметки для себя
msg-retry = Отправить ещё раз
msg-forwarded = Переслано
msg-quote-missing = Исходное сообщение недоступно
msg-deleted = Сообщение удалено
msg-unsupported = Это сообщение требует более новой версии Samizdat: обновите Samizdat, чтобы его увидеть
msg-edited = изменено
msg-menu = Действия с сообщением
msg-reply = Ответить
msg-react = Реакция
msg-react-with = Отреагировать { $emoji }
msg-forward = Переслать
msg-edit = Изменить текст
msg-edit-save = Сохранить
msg-delete-me = Удалить у меня
msg-delete-all = Удалить у всех
chat-replying-to = Ответ на сообщение
chat-reply-cancel = Отменить ответ
forward-title = Переслать сообщение
forward-to = Кому отправить
forward-send = Переслать

new-contact-title = Новый контакт
invite-create-title = Пригласить собеседника
invite-create-help = Любой, у кого есть ссылка, сможет начать с вами переписку. Передавайте её по каналу, которому доверяете.
invite-reusable = Многоразовая: ею смогут воспользоваться несколько человек
invite-expiry = Действует
expiry-1h = 1 час
expiry-24h = 1 сутки
expiry-72h = 3 дня
expiry-168h = 1 неделю
invite-create = Создать приглашение
invite-link-title = Ваша ссылка-приглашение
invite-link-help = Отправьте ссылку или дайте отсканировать код. Ссылка действует до { $when }.
invite-single = Сработает один раз.
invite-multi = Ею смогут воспользоваться несколько человек.
copy = Копировать
copied = Скопировано
accept-title = Принять приглашение
field-invite-link = Ссылка-приглашение
field-contact-name = Как назвать контакт
accept-submit = Принять приглашение

group-new-title = Новая группа
field-group-name = Название группы
group-pick-members = Участники
group-no-contacts = У вас пока нет контактов: сначала добавьте собеседников, потом создайте группу.
group-create = Создать группу

info-title = Участники
member-not-joined = ещё не присоединился
member-verified = проверен
member-remove = Удалить
member-verify = Код безопасности
group-add-title = Добавить участников
group-add-submit = Добавить
group-add-none = Все ваши контакты уже в этой группе.
group-added-waiting = Будут добавлены, когда их ретранслятор станет доступен: { $names }
group-rename-title = Переименовать группу
group-rename-submit = Переименовать
group-leave-title = Выйти из группы
group-leave-help = Вы перестанете получать её сообщения.
group-leave = Выйти из группы

timer-title = Исчезающие сообщения
timer-help = Сообщения, отправленные с этого момента, удаляются на устройствах всех участников по истечении этого времени.
timer-off = Выключены
timer-5m = 5 минут
timer-1h = 1 час
timer-1d = 1 сутки
timer-1w = 1 неделя
timer-secs = { $secs } с
timer-save = Установить
chat-timer-on = Исчезающие сообщения: { $duration }

verify-title = Код безопасности с собеседником { $name }
verify-help = Сверьте эти цифры с собеседником { $name } при встрече или по звонку, которому доверяете. Если они совпадают, между вами никого нет.
verify-mark = Отметить как проверенный
verify-unmark = Снять отметку о проверке
verify-verified = Вы проверили собеседника { $name }.
verify-not-verified = Ещё не проверен.

settings-title = Настройки
settings-language = Язык
lang-auto = Автоматически (как в браузере)
# This language by its own name (the language switcher), and its decimal separator.
language-name = Русский
decimal-separator = ,
settings-save = Сохранить
settings-profile = Ваш профиль
settings-name = Имя
settings-relay = Ретранслятор
settings-fingerprint = Отпечаток ключа

settings-devices-title = Устройства
settings-devices-help = Другие ваши телефоны и компьютеры: каждый участвует во всех разговорах под вашей личностью. Контакты видят одного человека, коды безопасности не меняются.
settings-devices-first = Первое устройство
settings-devices-this = это устройство
settings-devices-revoked = отключено
settings-devices-revoke = Отключить
settings-devices-revoked-done = Устройство отключено и удалено из всех разговоров.

settings-duress-title = Фраза на случай принуждения
settings-duress-help = Если вас заставят разблокировать Samizdat, назовите эту фразу: она незаметно удалит этот профиль и откроет пустой с тем же именем.
field-duress = Фраза на случай принуждения
field-duress-again = Эта фраза ещё раз
settings-duress-submit = Задать фразу
settings-duress-done = Фраза на случай принуждения задана.
err-duress-same = Эта фраза должна отличаться от вашей парольной фразы.
settings-wipe-title = Стереть профиль
settings-wipe-help = Сразу удаляет с этого компьютера все переписки, контакты и ключи. Отменить это нельзя.
settings-wipe-confirm = Понимаю: удалить всё сейчас
settings-wipe-submit = Стереть сейчас
err-wipe-confirm = Отметьте флажок, чтобы подтвердить.

error-title = Что-то пошло не так
err-relay-unreachable = Нет связи с ретранслятором. Попробуйте снова, когда она появится.
err-not-found = Не найдено: возможно, это уже удалено.
err-invalid-invite = Ссылка-приглашение недействительна: { $message }
err-usage = { $message }
err-other = Ошибка: { $message }

## Attachments
msg-file-save = Сохранить
chat-attach = Файл
chat-attach-caption = Подпись (необязательно)
chat-attach-send = Отправить файл
file-too-large = Файл больше 100 МБ, его нельзя отправить.
size-bytes = { $n } байт
size-kb = { $n } КБ
size-mb = { $n } МБ

## Proxy
settings-proxy-title = Прокси и Tor
settings-proxy-help = Все соединения пойдут через прокси — если ретранслятор заблокирован или ваш адрес нужно скрыть. Укажите socks5h://хост:порт (имена разрешает прокси), socks5:// или http://, либо «tor» для Tor на этом компьютере; оставьте пустым для прямых соединений. Действует после перезапуска приложения.
settings-proxy-now = Сейчас: { $proxy }
settings-proxy-none = Сейчас: прямые соединения, без прокси.
settings-proxy-isolated = каждый разговор отдельно
settings-proxy-field = Адрес прокси
settings-proxy-isolate = Отдельные соединения для каждого разговора (с Tor — всегда)
settings-proxy-done = Сохранено. Перезапустите приложение, чтобы подключаться так.

# Lock, quit (security review 3, H3)
verify-page-title = Код безопасности
stopped-title = Samizdat остановлен
stopped-intro = Приложение закрыто, в этом браузере от него ничего не осталось. Чтобы открыть его снова, запустите samizdat app.
lock-button = Заблокировать
quit-button = Выйти
lock-intro = Блокировка закрывает профиль (ключи уходят из памяти) до повторного ввода пароля; «Выйти» также останавливает приложение.
settings-session-title = Блокировка и выход

# Linking a device: the new device shows the link (security review 3, H1)
settings-devices-add-label = Ссылка с нового устройства
settings-devices-add-help = На новом устройстве выберите в приложении «Подключить к уже существующему профилю» или выполните samizdat device join --name ИМЯ и вставьте сюда показанную ссылку. Ссылка действует один раз в течение 2 минут.
settings-devices-add = Добавить устройство
settings-devices-confirm = Добавить «{ $name }» как ваше устройство?
settings-devices-confirm-code = На его экране должен быть тот же код:
settings-devices-confirm-help = Оно получит все разговоры и их историю и сможет писать от вашего имени. Добавляйте, только если это ваше устройство и коды совпадают.
settings-devices-confirm-yes = Да, добавить устройство
settings-devices-confirm-no = Отмена
settings-devices-adding = Добавляем «{ $name }»: оно появится в списке, когда войдёт во все разговоры.
onboard-link-help = Уже пользуетесь Samizdat на другом устройстве? Подключите это устройство к тому профилю (имя выше станет именем этого устройства).
onboard-link = Подключить к уже существующему профилю
linking-title = Подключение устройства
linking-intro = На устройстве с вашим профилем откройте Настройки → Устройства → Добавить устройство и отсканируйте или вставьте эту ссылку. Она действует один раз в течение 2 минут.
linking-code = Другое устройство должно показать этот код:
linking-text = Ссылка текстом
linking-waiting = Ждём другое устройство…
linking-preparing = Готовим ссылку…
linking-again = Начать заново

# Что сообщает ядро, в виде данных (samizdat_core::notice): notice-<вид>, problem-<вид ошибки>,
# refusal-<код>, status-<код>.
problem-wrong-passphrase = неверная парольная фраза
problem-usage = запрос неверен
problem-not-found = не найдено
problem-not-member = вы не участник
problem-invalid-invite = приглашение недействительно
problem-key-package-mismatch = ретранслятор выдал ключ, который не принадлежит пригласившему
problem-relay-unreachable = ретранслятор недоступен
problem-relay = ретранслятор отказал
problem-busy = занято; попробуйте ещё раз
problem-protocol = сообщение нарушает протокол
problem-mls = шифрование группы его не приняло
problem-crypto = не прошла криптографическая проверка
problem-integrity = данные не прошли проверку целостности
problem-storage = сбой локального хранилища
problem-stopped = служба остановлена
refusal-unknown-invite = знакомство по приглашению, которого этот профиль не создавал
refusal-expired-invite = знакомство по просроченному приглашению
refusal-reused-invite = повторное знакомство по одноразовому приглашению
status-left = вы вышли
status-removed = вас удалили из группы
status-lost-sync = связь с группой нарушена; попросите участника добавить вас снова
status-refusing = отказ: { $reason }
status-refused = отказано: { $reason }
status-invite-refused = приглашение отклонено ({ $reason }); попросите новую ссылку
notice-relay-error = ретранслятор: { $code }: { $detail }
notice-relay-frame-unreadable = ретранслятор прислал нечитаемый кадр
notice-relay-unreachable = { $error }; читаем ваши другие ретрансляторы
notice-move-failed = не удалось перейти на { $relay }: { $error }
notice-log-recreated = журнал этого разговора создан заново на ретрансляторе { $relay }; остальные участники перейдут следом
notice-moved-by-us = разговор перенесён на ретранслятор { $relay } (с { $from }); остальные участники перейдут следом
notice-moved-by-member = участник перенёс разговор на ретранслятор { $relay } (с { $from })
notice-moved-chosen = разговор перенесён на ретранслятор { $relay } (выбран вместо { $over } по правилу переноса)
notice-move-not-followed = не удалось последовать за переносом разговора: { $error }
notice-move-not-told = { $who } не удалось сообщить о переносе разговора ({ $error }); собеседник перейдёт, когда заметит, что ретранслятор недоступен
notice-announce-failed = не удалось сообщить о себе: { $error }
notice-locked-log-not-recreated = не удалось заново создать заблокированный журнал: { $error }
notice-sync-failed = синхронизация не удалась: { $error }
notice-lost-sync-token = связь с группой нарушена (ключ эпохи больше не совпадает: развилка или подмена); попросите участника добавить вас снова
notice-lost-sync-false-token = связь с группой нарушена: изменение от { $who } на позиции { $position } не ведёт к ключу, записанному ретранслятором — либо { $who } дал ретранслятору ложный ключ (закрыв доступ остальным), либо ретранслятор выдал изменение, которое он не принимал (развилка); восстановление: журнал создаётся заново на том же ретрансляторе (остальные перейдут следом), а { $who } удаляется — если только остальные этого не видят (тогда развилка у вас: попросите добавить вас снова)
notice-lost-sync-forked-commit = связь с группой нарушена: изменение на позиции { $position } не ведёт к ключу, записанному ретранслятором (ретранслятор выдал изменение, которое не принимал, или наше изменение потерялось); создайте журнал заново (`samizdat move { $conversation } --to RELAY`) или попросите добавить вас снова
notice-entries-expired = на ретрансляторе не хватает записей (истёк срок?); попросите участника добавить вас снова
notice-entries-missing = записи { $from }..{ $to } журнала отсутствуют (их скрыл ретранслятор, или истёк срок)
notice-entry-rejected = запись { $position } журнала отклонена: { $error }
notice-undecodable-message = пропущено нечитаемое сообщение на позиции { $position }
notice-mailbox-message-unreadable = отброшено нечитаемое сообщение из почтового ящика
notice-queued-update-refused = ретранслятор отклонил ожидавшее изменение: { $error }
notice-attachment-refused = вложение отклонено: { $error }
notice-join-failed = не удалось войти в разговор: { $error }
notice-invitation-relay-changed = адрес ретранслятора в приглашении изменили по пути; используется тот, что подписал отправитель
notice-add-pending = { $name } ещё не в этом разговоре ({ $error }); это завершится само, когда ретранслятор станет доступен
notice-add-failed = не удалось добавить { $name } в группу: { $error }
notice-connect-failed = не удалось связаться с { $name }: { $error }; попросите новое приглашение
notice-invitation-resent = { $name } так и не вошёл; отправлено новое приглашение
notice-invitation-resend-failed = { $name } так и не вошёл, а новое приглашение не отправилось: { $error }
notice-welcome-not-delivered = { $who } не удалось отправить приглашение в эту группу ({ $error }); удалите и добавьте снова или спросите, какой у него сейчас ретранслятор
notice-leaver-not-removed = не удалось удалить вышедшего участника: { $error }; попробуем снова
notice-left-on-other-device = вы вышли из этой группы на другом своём устройстве
notice-introduction-refused = отказано: { $reason }; другой стороне сообщено, разговор удалён
notice-invite-refused-by = { $name } отклонил приглашение ({ $reason }); попросите новую ссылку
notice-they-could-not-read = Собеседник не смог прочитать ваше сообщение: его изменили по дороге (сервер-ретранслятор или кто-то между вами), и оно отклонено. Звонок, если вы звонили, не смог соединиться.
notice-let-in-by-hand = Вы впустили этого человека сами, хотя это { $reason }. Если вы не давали ему эту ссылку, её видел кто-то ещё.
notice-contact-device-added = { $who } подключил новое устройство
notice-contact-device-removed = { $who } отключил устройство; оно больше не говорит от его имени
notice-device-list-unsigned = пропущен список устройств, не подписанный личностью отправителя
notice-device-list-not-sent = не удалось отправить список устройств: { $error }
notice-revoked-device-changed-group = { $added ->
    [0] устройство, которое отключил { $who }, изменило эту группу; оно удаляется
   *[other] устройство, которое отключил { $who }, изменило эту группу; оно и добавленные им участники ({ $added }) удаляются
}
notice-ignored-revoked-device = пропущено сообщение с устройства, которое отключил { $who }
notice-link-failed = подключить устройство не удалось: { $error }
notice-link-message-unreadable = при подключении устройства пришло сообщение, которое не открывается его ключом (изменено или не ему); пропущено
notice-device-linked = устройство «{ $name }» подключено: добавлено в разговоры ({ $conversations }), история отправлена
notice-new-device-not-added = не удалось добавить новое устройство в этот разговор: { $error }
notice-own-devices-not-added = не удалось добавить ваши другие устройства: { $error }
notice-own-device-not-added = не удалось добавить сюда ваше устройство «{ $name }»: { $error }
notice-revoked-device-not-removed = не удалось удалить здесь ваше отключённое устройство: { $error }
notice-history-sent = ваше другое устройство прислало историю
notice-history-received = получена история с другого устройства: разговоров — { $conversations }, сообщений — { $messages }
notice-history-unreadable = историю с другого устройства прочитать не удалось: { $error }
notice-other-devices-not-told = не удалось сообщить вашим другим устройствам: { $error }
notice-invitation-accepted-elsewhere = вы вошли в «{ $name }»: приглашение принято на другом устройстве
notice-invitation-declined-elsewhere = приглашение отклонено на другом вашем устройстве
notice-invitation-elsewhere-failed = приглашение, принятое на другом устройстве, не сработало: { $error }
notice-claims-conversation = выдаёт себя за ваш разговор «{ $name }», но не продолжает его: возможно, попытка захвата
notice-unknown-relay = размещено на ретрансляторе { $relay }, которым вы никогда не пользовались: принятие подключит вас к нему

arrange-title = В вашем списке
arrange-pin = Закрепить наверху
arrange-unpin = Открепить
arrange-archive = В архив
arrange-unarchive = Вернуть из архива
arrange-mute = Без звука
arrange-save = Применить
mute-1h = на час
mute-8h = на 8 часов
mute-1w = на неделю
mute-forever = пока не включу
mute-off = включить сейчас
muted-until = Без звука:
mark-pinned = Закреплён
mark-muted = Без звука
chats-archived = Архив ({ $count })
search-label = Поиск сообщений на этом устройстве
search-title = Поиск
search-go = Найти
search-count = { $count ->
    [one] Найдено { $count } сообщение
    [few] Найдено { $count } сообщения
   *[many] Найдено { $count } сообщений
}
search-words = Введите хотя бы одно слово для поиска.

line-member-added = { $who } в группе
line-member-removed = { $who } больше не в группе: участника удалили
line-member-left = { $who } покидает группу
line-renamed = Группа теперь называется «{ $name }»
line-you-removed = Вас удалили из группы
line-timer = { $who }: исчезающие сообщения через { $duration }
line-timer-you = Вы включили исчезающие сообщения: через { $duration }
line-timer-off = { $who } выключает исчезающие сообщения
line-timer-off-you = Вы выключили исчезающие сообщения
call-voice = Позвонить
call-video = Видеозвонок
call-group = Групповой звонок (до четырёх человек)
call-incoming-group = Входящий групповой звонок
call-group-waiting = Ждём, пока присоединятся остальные…
call-in-the-call = В звонке
call-incoming = Входящий звонок
call-incoming-video = Входящий видеозвонок
call-calling = Вызов…
call-connecting = Соединение…
call-connected = На связи
call-ended = Звонок завершён
call-failed = Не удалось соединиться.
call-no-media = Браузер не дал доступа к микрофону или камере.
call-secure = Через сервер · сквозное шифрование
call-safety = Код безопасности
call-accept = Принять
call-decline = Отклонить
call-mute = Выключить микрофон
call-unmute = Включить микрофон
call-camera-off = Выключить камеру
call-camera-on = Включить камеру
call-hangup = Завершить
call-mic = Микрофон
call-cam = Камера
call-kind-group = Групповой звонок
call-kind-out-voice = Исходящий звонок
call-kind-out-video = Исходящий видеозвонок
call-kind-in-voice = Входящий звонок
call-kind-in-video = Входящий видеозвонок
line-call-answered = { $kind }, { $duration }
line-call-missed = Пропущенный звонок
line-call-no-answer = { $kind }: нет ответа
line-call-declined = { $kind }: отклонён
line-call-busy = { $kind }: занято
line-call-cancelled = { $kind }: отменён
line-call-answered-elsewhere = { $kind }: принят на другом устройстве
line-call-failed = { $kind }: соединение не установлено

notify-title = Уведомления
notify-help = Пока приложение открыто в этом браузере. Их содержимое видит любой, кто смотрит на экран, а также браузер и система, которые их показывают.
notify-shows = Уведомление показывает
notify-off = ничего: уведомлений нет
notify-private = только то, что пришло сообщение
notify-sender = кто написал, но не что
notify-sender-text = кто написал и что
notify-allow = Разрешить уведомления в этом браузере
notify-denied = Браузер запрещает уведомления приложения; разрешите их в настройках сайта.
notify-new-message = Новое сообщение
contact-rename-title = Как вы называете этот контакт

## Channels
nav-channels = Каналы
channels-title = Каналы
channels-none = Вы пока не ведёте и не читаете ни одного канала.
channel-counts = Публикаций: { $posts } · непрочитанных: { $unread }
channel-admin = администратор
channel-follow-title = Подписаться на канал
field-channel-link = Ссылка на канал
channel-follow = Подписаться
channel-create-title = Новый канал
field-channel-name = Название
field-channel-about = О чём канал
channel-create = Создать канал
channel-post-placeholder = Напишите публикацию
channel-post = Опубликовать
channel-attach = Фото или файл
channel-no-posts = Публикаций пока нет.
channel-pinned = Закреплено
channel-edited = изменено
channel-pin = Закрепить
channel-delete = Удалить
channel-fault = Копия этого канала на { $relay } не прошла проверку; канал прочитан с другого ретранслятора.
channel-link-title = Поделиться каналом
channel-link-help = Любой, у кого есть эта ссылка, может читать канал. Никто, включая вас, не видит, кто его читает.
channel-qr = QR-код ссылки на канал
channel-mirror-title = Зеркала
channel-mirror-help = Скопируйте канал на другой ретранслятор: читатели перейдут на него, если этот заблокируют.
channel-read-from = Читается с:
field-mirror-url = Адрес ретранслятора
channel-mirror-add = Добавить зеркало
channel-leave = Отписаться от канала
channel-admins-title = Администраторы
channel-admins-help = Администраторы публикуют и назначают или снимают администраторов. У каждого свой ключ для этого канала; общаются они в группе администраторов канала.
channel-admins-only-you = Вы единственный администратор.
field-admin-contact = Контакт
channel-admin-add = Назначить администратором
channel-admin-remove = Снять
