"""What the test photos say, in each language a traveller meets: the words of a street sign,
a departures board, a menu, opening hours, a warning label and a ticket machine.

Prices and times are written as the place writes them; the facts drawn from them (in
evaluation.photoset) are numbers and times, so any answer language can be checked for them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Words:
    """One language's text for every kind of photo."""

    code: str  # BCP 47: "de", "zh-Hant"
    script: str  # the row of the score table
    exit: str
    no_entry: str
    departures: str
    platform: str  # "{}" where the number goes, else after it
    cities: tuple[str, str, str]
    menu: str
    dishes: tuple[str, str, str]
    contains_peanuts: str  # the allergen note under the third dish
    currency: str  # "{}" is the amount, as written there
    opening_hours: str
    mon_fri: str
    saturday: str
    sunday_closed: str
    danger: str
    high_voltage: str
    do_not_touch: str
    tickets: str
    single_ticket: str
    day_ticket: str
    cash_only: str
    decimal: str = ","  # the decimal separator of prices
    vertical: bool = False  # written top to bottom (Japanese signs)
    rtl: bool = False
    dash: str = "–"  # of ranges (Noto Sans Arabic has no en dash)


LANGUAGES: tuple[Words, ...] = (
    Words(
        "de", "latin", "Ausgang", "Kein Zutritt", "Abfahrt", "Gleis",
        ("München Hbf", "Köln Messe/Deutz", "Düsseldorf"),
        "Speisekarte", ("Käsespätzle", "Schweinebraten mit Knödel", "Apfelstrudel"),
        "enthält Erdnüsse", "{} €", "Öffnungszeiten", "Mo–Fr", "Sa", "So geschlossen",
        "Achtung!", "Hochspannung – Lebensgefahr", "Nicht berühren",
        "Fahrkarten", "Einzelfahrt", "Tageskarte", "Nur Bargeld",
    ),
    Words(
        "fr", "latin", "Sortie", "Entrée interdite", "Départs", "Voie",
        ("Orléans", "Besançon Viotte", "Nîmes"),
        "Carte du jour", ("Soupe à l'oignon", "Bœuf bourguignon", "Crème brûlée"),
        "contient des arachides", "{} €", "Horaires d'ouverture", "Lun–Ven", "Sam",
        "Dimanche fermé", "Danger !", "Haute tension", "Ne pas toucher",
        "Billets", "Ticket à l'unité", "Forfait journée", "Espèces uniquement",
    ),
    Words(
        "es", "latin", "Salida", "Prohibido el paso", "Salidas", "Andén",
        ("Málaga", "Córdoba", "A Coruña"),
        "Menú del día", ("Jamón ibérico", "Paella de mariscos", "Pollo al ajillo"),
        "contiene cacahuetes", "{} €", "Horario de apertura", "Lun–Vie", "Sáb",
        "Domingo cerrado", "¡Peligro!", "Alta tensión", "No tocar",
        "Billetes", "Billete sencillo", "Abono de un día", "Solo efectivo",
    ),
    Words(
        "pl", "latin", "Wyjście", "Zakaz wstępu", "Odjazdy", "Peron",
        ("Łódź Fabryczna", "Gdańsk Główny", "Kraków Główny"),
        "Menu", ("Żurek", "Pierogi ruskie", "Gołąbki"),
        "zawiera orzeszki ziemne", "{} zł", "Godziny otwarcia", "Pon–Pt", "Sob",
        "Niedziela nieczynne", "Uwaga!", "Wysokie napięcie", "Nie dotykać",
        "Bilety", "Bilet jednorazowy", "Bilet dobowy", "Tylko gotówka",
    ),
    Words(
        "tr", "latin", "Çıkış", "Girilmez", "Kalkış", "Peron",
        ("İzmir", "Eskişehir", "Kayseri"),
        "Menü", ("Mercimek çorbası", "İskender kebap", "Künefe"),
        "yer fıstığı içerir", "{} ₺", "Çalışma saatleri", "Pzt–Cum", "Cmt",
        "Pazar kapalı", "Dikkat!", "Yüksek gerilim", "Dokunmayın",
        "Biletler", "Tek biniş", "Günlük bilet", "Sadece nakit",
    ),
    Words(
        "vi", "latin", "Lối ra", "Cấm vào", "Giờ khởi hành", "Sân ga",
        ("Hà Nội", "Đà Nẵng", "Huế"),
        "Thực đơn", ("Phở bò", "Bún chả", "Gỏi cuốn"),
        "có đậu phộng", "{} đ", "Giờ mở cửa", "Thứ 2–Thứ 6", "Thứ 7", "Chủ nhật nghỉ",
        "Nguy hiểm!", "Điện cao thế", "Không chạm vào",
        "Vé", "Vé một lượt", "Vé ngày", "Chỉ nhận tiền mặt", decimal=".",
    ),
    Words(
        "ru", "cyrillic", "Выход", "Вход воспрещён", "Отправление", "Путь",
        ("Санкт-Петербург", "Нижний Новгород", "Ярославль"),
        "Меню", ("Борщ со сметаной", "Пельмени", "Блины с икрой"),
        "содержит арахис", "{} ₽", "Часы работы", "Пн–Пт", "Сб", "Вс выходной",
        "Опасно!", "Высокое напряжение", "Не прикасаться",
        "Билеты", "Разовый билет", "Билет на сутки", "Только наличные",
    ),
    Words(
        "el", "greek", "Έξοδος", "Απαγορεύεται η είσοδος", "Αναχωρήσεις", "Γραμμή",
        ("Θεσσαλονίκη", "Πειραιάς", "Λάρισα"),
        "Κατάλογος", ("Μουσακάς", "Σουβλάκι χοιρινό", "Χωριάτικη σαλάτα"),
        "περιέχει φιστίκια", "{} €", "Ώρες λειτουργίας", "Δευ–Παρ", "Σάβ", "Κυριακή κλειστά",
        "Κίνδυνος!", "Υψηλή τάση", "Μην αγγίζετε",
        "Εισιτήρια", "Απλό εισιτήριο", "Ημερήσιο εισιτήριο", "Μόνο μετρητά",
    ),
    Words(
        "ar", "arabic", "مخرج", "ممنوع الدخول", "المغادرة", "رصيف",
        ("القاهرة", "الإسكندرية", "أسوان"),
        "قائمة الطعام", ("فول مدمس", "كشري", "شاورما دجاج"),
        "يحتوي على الفول السوداني", "{} ج.م", "ساعات العمل", "الأحد-الخميس", "السبت",
        "الجمعة مغلق", "خطر!", "ضغط عالٍ", "ممنوع اللمس",
        "التذاكر", "تذكرة ذهاب", "تذكرة يومية", "نقدًا فقط", decimal=".", rtl=True, dash="-",
    ),
    Words(
        "he", "hebrew", "יציאה", "הכניסה אסורה", "יציאות", "רציף",
        ("ירושלים", "חיפה", "באר שבע"),
        "תפריט", ("שקשוקה", "פלאפל בפיתה", "סביח"),
        "מכיל בוטנים", "₪ {}", "שעות פתיחה", "א׳–ה׳", "ו׳", "שבת סגור",
        "סכנה!", "מתח גבוה", "לא לגעת",
        "כרטיסים", "נסיעה בודדת", "כרטיס יומי", "מזומן בלבד", decimal=".", rtl=True,
    ),
    Words(
        "hi", "devanagari", "निकास", "प्रवेश निषेध", "प्रस्थान", "प्लेटफ़ॉर्म",
        ("नई दिल्ली", "मुंबई", "वाराणसी"),
        "मेन्यू", ("पनीर टिक्का", "दाल मखनी", "आलू पराठा"),
        "इसमें मूंगफली है", "₹{}", "खुलने का समय", "सोम–शुक्र", "शनि", "रविवार बंद",
        "खतरा!", "उच्च वोल्टेज", "छूना मना है",
        "टिकट", "एकल यात्रा टिकट", "दैनिक टिकट", "केवल नकद", decimal=".",
    ),
    Words(
        "th", "thai", "ทางออก", "ห้ามเข้า", "ขบวนรถออก", "ชานชาลา",
        ("เชียงใหม่", "อยุธยา", "หัวหิน"),
        "เมนู", ("ผัดไทยกุ้งสด", "ต้มยำกุ้ง", "ส้มตำ"),
        "มีถั่วลิสง", "{} บาท", "เวลาทำการ", "จันทร์–ศุกร์", "เสาร์", "วันอาทิตย์ปิด",
        "อันตราย!", "ไฟฟ้าแรงสูง", "ห้ามจับ",
        "ตั๋ว", "ตั๋วเที่ยวเดียว", "ตั๋วรายวัน", "รับเฉพาะเงินสด", decimal=".",
    ),
    Words(
        "zh-Hans", "han-simplified", "出口", "禁止入内", "出发", "站台",
        ("北京南", "上海虹桥", "广州东"),
        "菜单", ("宫保鸡丁", "麻婆豆腐", "鱼香肉丝"),
        "含花生", "¥{}", "营业时间", "周一至周五", "周六", "周日休息",
        "危险！", "高压电", "请勿触摸",
        "售票", "单程票", "一日票", "只收现金", decimal=".",
    ),
    Words(
        "zh-Hant", "han-traditional", "出口", "禁止進入", "開車時刻", "月台",
        ("臺北", "高雄", "臺中"),
        "菜單", ("牛肉麵", "滷肉飯", "蚵仔煎"),
        "含花生", "NT${}", "營業時間", "週一至週五", "週六", "週日公休",
        "危險！", "高壓電", "請勿觸摸",
        "售票", "單程票", "一日票", "僅收現金", decimal=".",
    ),
    Words(
        "ja", "japanese", "出口", "立入禁止", "発車案内", "{}番線",
        ("新大阪", "京都", "名古屋"),
        "お品書き", ("天ぷらそば", "親子丼", "抹茶アイス"),
        "落花生を含む", "{}円", "営業時間", "月〜金", "土", "日曜定休",
        "危険", "高電圧", "さわらないでください",
        "きっぷ", "片道きっぷ", "一日乗車券", "現金のみ", decimal=".", vertical=True,
    ),
    Words(
        "ko", "korean", "출구", "출입금지", "출발", "{}번 타는 곳",
        ("부산", "대전", "광주송정"),
        "메뉴", ("김치찌개", "비빔밥", "불고기"),
        "땅콩 함유", "{}원", "영업시간", "월–금", "토", "일요일 휴무",
        "위험!", "고압 전기", "만지지 마세요",
        "승차권", "1회권", "1일권", "현금만 가능", decimal=".",
    ),
)  # fmt: skip

SCRIPTS = tuple(dict.fromkeys(words.script for words in LANGUAGES))
