"""What the consultation report says, in each language a hospital can receive.

The report is read by the referring team, not by the node's users, so its
words live here (not in the viewer's catalogues): one table per language,
the same keys in each (tests/test_consult.py checks that).
"""

from __future__ import annotations

from storage.cases import STATUSES as CASE_STATUSES

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Consultation report",
        "received": "Referral received",
        "under-review": "Under review",
        "more-imaging": "More imaging needed",
        "mail_subject": "Referral case {ref}: {status}",
        "mail_body": "The regional centre has updated referral case {ref}: {status}.\n"
        "{link}\n\nThis message names no patient: the case reference is all it carries.",
        "from": "Regional paediatric cardiac centre, node {ae}",
        "patient": "Patient",
        "patient_id": "Patient ID",
        "birth_date": "Date of birth",
        "accession": "Accession number",
        "hospital": "Referring hospital",
        "case": "Case",
        "studies": "Imaging reviewed",
        "decision": "Decision",
        "decided": "Decided by {user} on {day}",
        "missing": "Imaging needed",
        "device": "Planned device",
        "date": "Indicative date",
        "reason": "Reason",
        "note": "Message to the referring team",
        "plans": "Closure plans",
        "plan": "{defect}: plan {plan}, version {version}, signed by {user} on {day}",
        "no_plans": "No signed closure plan.",
        "key_images": "Key images",
        "frame": "frame {n}",
        "accepted": "Accepted for transcatheter closure",
        "surgery": "Referred for surgery",
        "declined": "Declined",
        "pseudonymous": "The centre's copy: the child is named by pseudonym only.",
        "reidentified": "Re-identified for {hospital} only, at the moment of sending.",
        "support": "Measured values and device sizes are decision support, not an order.",
        "page": "Page {n}",
    },
    "ru": {
        "title": "Заключение консультации",
        "received": "Направление получено",
        "under-review": "На рассмотрении",
        "more-imaging": "Нужны дополнительные исследования",
        "mail_subject": "Случай направления {ref}: {status}",
        "mail_body": "Региональный центр обновил случай направления {ref}: {status}.\n"
        "{link}\n\nВ этом письме нет данных пациента: только номер случая.",
        "from": "Региональный детский кардиологический центр, узел {ae}",
        "patient": "Пациент",
        "patient_id": "Идентификатор пациента",
        "birth_date": "Дата рождения",
        "accession": "Номер направления",
        "hospital": "Направившая больница",
        "case": "Случай",
        "studies": "Рассмотренные исследования",
        "decision": "Решение",
        "decided": "Решение принял(а) {user}, {day}",
        "missing": "Необходимые исследования",
        "device": "Планируемое устройство",
        "date": "Ориентировочная дата",
        "reason": "Причина",
        "note": "Сообщение направившей команде",
        "plans": "Планы закрытия",
        "plan": "{defect}: план {plan}, версия {version}, подписал(а) {user}, {day}",
        "no_plans": "Подписанного плана закрытия нет.",
        "key_images": "Ключевые изображения",
        "frame": "кадр {n}",
        "accepted": "Принят на транскатетерное закрытие",
        "surgery": "Направлен на хирургическое лечение",
        "declined": "Отказано",
        "pseudonymous": "Копия центра: ребёнок указан только под псевдонимом.",
        "reidentified": "Данные пациента восстановлены только для {hospital}, в момент отправки.",
        "support": "Измеренные значения и размеры устройств помогают принять решение, "
        "но не являются назначением.",
        "page": "Страница {n}",
    },
    "zh": {
        "title": "会诊报告",
        "received": "已收到转诊",
        "under-review": "审阅中",
        "more-imaging": "需要补充影像",
        "mail_subject": "转诊病例 {ref}：{status}",
        "mail_body": "区域中心已更新转诊病例 {ref}：{status}。\n"
        "{link}\n\n本邮件不含任何患者信息，只有病例编号。",
        "from": "区域小儿心脏中心，节点 {ae}",
        "patient": "患者",
        "patient_id": "患者编号",
        "birth_date": "出生日期",
        "accession": "检查申请号",
        "hospital": "转诊医院",
        "case": "病例",
        "studies": "已审阅的影像",
        "decision": "决定",
        "decided": "由 {user} 于 {day} 决定",
        "missing": "需要补充的影像",
        "device": "计划使用的封堵器",
        "date": "预计日期",
        "reason": "原因",
        "note": "致转诊团队的留言",
        "plans": "封堵计划",
        "plan": "{defect}：计划 {plan}，版本 {version}，由 {user} 于 {day} 签署",
        "no_plans": "没有已签署的封堵计划。",
        "key_images": "关键图像",
        "frame": "第 {n} 帧",
        "accepted": "接受经导管封堵",
        "surgery": "转外科手术",
        "declined": "不予接受",
        "pseudonymous": "中心留存副本：患儿仅以化名标识。",
        "reidentified": "仅为 {hospital} 在发送时恢复患者身份。",
        "support": "测量值和封堵器尺寸仅供决策参考，不是医嘱。",
        "page": "第 {n} 页",
    },
}


# The case statuses the report and the e-mails name: each a key of WORDS.
STATUSES = tuple(CASE_STATUSES)


def say(language: str, key: str, **values: object) -> str:
    """``key`` in ``language`` (English where the language is unknown)."""
    text = WORDS.get(language, WORDS["en"])[key]
    return text.format(**values) if values else text
